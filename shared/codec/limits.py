"""What a VP8 frame may measure: 14 bits a side in a key frame's header, and an area past which
this codec refuses a frame before it allocates anything (8192 x 4352, above 8K UHD); and so
what a compressed frame and a stored decoder state may weigh. Plain Python, so that what only
checks an input (the split, the API) need not load the codec."""

MAX_FRAME_SIDE = 16383
MAX_FRAME_AREA = 8192 * 4352
# Twice the raw 4:2:0 picture of the largest frame: more than libvpx writes for any frame, so a
# container's size field past it is corrupt, and is refused before it is read.
MAX_COMPRESSED_FRAME = 2 * MAX_FRAME_AREA * 3 // 2
# A decoder state's body: three bordered reference pictures of the largest frame, and the
# rest. A stored state (`DecoderState.to_bytes`) adds its header and, compressed, at most
# zlib's growth on incompressible data (well under 0.1 %).
MAX_STATE_BODY = 3 * (MAX_FRAME_AREA + 2 * 16 * 16384) * 3 // 2 + (1 << 20)
MAX_STATE_BYTES = MAX_STATE_BODY + MAX_STATE_BODY // 1000 + 1024
