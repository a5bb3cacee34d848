from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t, uint32_t

from .frame_context cimport FrameContext, MacroblockInfo, Plane
from .frame_record cimport FrameRecord


ctypedef struct Encoder:
    # Per-frame working context of the encoder and of rebase.
    FrameContext* fc          # planes, references, modes (shares the record's mb_info)
    Plane src[3]              # the target picture, macroblock-aligned (edges replicated)
    int64_t lambda_           # RD multiplier: distortion (SSE) units per bit, x256
    int64_t lambda_trellis    # the same for the trellis's level choices
    int lambda_sad            # motion-search multiplier: SAD units per bit, x256
    uint32_t token_cost[4][8][3][12]        # 1/256 bits; tokens 0-10 then EOB (11)
    uint32_t token_cost_no_eob[4][8][3][12] # the same after a zero (no end-of-block branch)
    int64_t rd_token_cost[4][8][3][12]      # lambda x token_cost / 256 (fill_token_costs)
    int64_t rd_token_cost_no_eob[4][8][3][12]
    uint32_t mv_cost[2][2048]               # 1/256 bits of each MV component, +/-1023 qpel
    int prob_intra            # running estimates of the header's probabilities (decisions)
    int prob_last
    int prob_golden
    int key_frame
    int prune
    int trellis               # trellis quantization instead of greedy pruning
    int y2_rounding[2]        # Y2's DC and AC rounding, in 1/256 of a step
    int ac_rounding           # every other block's AC rounding, and DC (when not in Y2)
    int dc_rounding
    int trellis_weight        # distortion weight of the trellis (TRELLIS_WEIGHT, per MB)
    # SSIM tuning: the frame's lambdas, and each macroblock's weight (x256: above 256 where
    # SSIM counts an error less than on average), from which tune_macroblock sets the
    # per-macroblock lambdas above. NULL: no tuning.
    uint16_t* mb_weight
    int64_t frame_lambda
    int64_t frame_lambda_trellis
    int frame_lambda_sad
    int need_rate
    uint8_t best_pixels[384]  # the reconstruction of the best candidate so far (Y, U, V)
    int intra_penalty
    int split_min_bits
    # Revisiting a frame's decisions (revisit_record): the earlier decision of the macroblock
    # being decided, which seeds a narrow motion search; NULL for a full decision.
    const MacroblockInfo* hint
