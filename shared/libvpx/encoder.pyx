"""libvpx's VP8 encoder (`vpx/vpx_encoder.h`, `vpx/vp8cx.h`) in process: the two passes of
ExCamera's phase 1, with the first pass's statistics kept in memory.

`encode_two_pass` configures the encoder exactly as `vpxenc` does for the command line of
`shared.pipeline.vpx.vpxenc_command` (same configuration fields, same codec controls in the same
order, same deadline, time base, timestamps and end-of-stream flushing), so for the same libvpx
its frames are byte for byte those of vpxenc's IVF file, provided libvpx sees the heap a fresh
vpxenc process gives it: see heap.c and ZEROED_HEAP.
"""

from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.string cimport memset

import numpy as np

from shared.pipeline.errors import LibvpxError


cdef extern from *:
    """
    #ifndef EXCAMERA_ZEROED_HEAP
    #define EXCAMERA_ZEROED_HEAP 0
    #endif
    """
    int EXCAMERA_ZEROED_HEAP


cdef extern from "vpx/vpx_codec.h" nogil:
    ctypedef enum vpx_codec_err_t:
        VPX_CODEC_OK
    ctypedef long vpx_codec_flags_t
    ctypedef const void *vpx_codec_iter_t
    ctypedef struct vpx_codec_iface_t:
        pass
    ctypedef struct vpx_codec_ctx_t:
        vpx_codec_err_t err

    const char *vpx_codec_version_str()
    const char *vpx_codec_iface_name(vpx_codec_iface_t *iface)
    const char *vpx_codec_err_to_string(vpx_codec_err_t err)
    const char *vpx_codec_error(vpx_codec_ctx_t *ctx)
    const char *vpx_codec_error_detail(vpx_codec_ctx_t *ctx)
    vpx_codec_err_t vpx_codec_destroy(vpx_codec_ctx_t *ctx)
    vpx_codec_err_t vpx_codec_control_(vpx_codec_ctx_t *ctx, int ctrl_id, ...)


cdef extern from "vpx/vpx_image.h" nogil:
    ctypedef enum vpx_img_fmt_t:
        VPX_IMG_FMT_I420
    ctypedef struct vpx_image_t:
        vpx_img_fmt_t fmt
        unsigned int w
        unsigned int h
        unsigned int d_w
        unsigned int d_h
        unsigned char *planes[4]
        int stride[4]

    vpx_image_t *vpx_img_wrap(vpx_image_t *img, vpx_img_fmt_t fmt, unsigned int d_w,
                              unsigned int d_h, unsigned int stride_align,
                              unsigned char *img_data)


cdef extern from "vpx/vpx_encoder.h" nogil:
    ctypedef int64_t vpx_codec_pts_t
    ctypedef uint32_t vpx_codec_frame_flags_t
    ctypedef long vpx_enc_frame_flags_t

    ctypedef struct vpx_fixed_buf_t:
        void *buf
        size_t sz

    ctypedef struct vpx_rational_t:
        int num
        int den

    ctypedef enum vpx_enc_pass:
        VPX_RC_ONE_PASS
        VPX_RC_FIRST_PASS
        VPX_RC_LAST_PASS

    cdef enum vpx_rc_mode:
        VPX_VBR
        VPX_CBR
        VPX_CQ
        VPX_Q

    cdef enum vpx_kf_mode:
        VPX_KF_AUTO
        VPX_KF_DISABLED

    cdef enum vpx_codec_cx_pkt_kind:
        VPX_CODEC_CX_FRAME_PKT
        VPX_CODEC_STATS_PKT

    # Only the members used here; the C compiler sees the real (anonymous) types.
    ctypedef struct _frame_data "struct vpx_codec_cx_pkt_frame_":
        void *buf
        size_t sz
        vpx_codec_pts_t pts
        unsigned long duration
        vpx_codec_frame_flags_t flags

    ctypedef union _packet_data "union vpx_codec_cx_pkt_data_":
        _frame_data frame
        vpx_fixed_buf_t twopass_stats

    ctypedef struct vpx_codec_cx_pkt_t:
        vpx_codec_cx_pkt_kind kind
        _packet_data data

    ctypedef struct vpx_codec_enc_cfg_t:
        unsigned int g_usage
        unsigned int g_threads
        unsigned int g_profile
        unsigned int g_w
        unsigned int g_h
        unsigned int g_input_bit_depth
        vpx_rational_t g_timebase
        vpx_enc_pass g_pass
        unsigned int g_lag_in_frames
        vpx_rc_mode rc_end_usage
        vpx_fixed_buf_t rc_twopass_stats_in
        unsigned int rc_target_bitrate
        unsigned int rc_min_quantizer
        unsigned int rc_max_quantizer
        unsigned int rc_undershoot_pct
        unsigned int rc_buf_sz
        unsigned int rc_buf_initial_sz
        unsigned int rc_buf_optimal_sz
        vpx_kf_mode kf_mode
        unsigned int kf_min_dist
        unsigned int kf_max_dist

    unsigned long VPX_DL_GOOD_QUALITY
    vpx_codec_frame_flags_t VPX_FRAME_IS_KEY
    vpx_codec_frame_flags_t VPX_FRAME_IS_INVISIBLE

    vpx_codec_err_t vpx_codec_enc_config_default(vpx_codec_iface_t *iface,
                                                 vpx_codec_enc_cfg_t *cfg, unsigned int usage)
    vpx_codec_err_t vpx_codec_enc_init(vpx_codec_ctx_t *ctx, vpx_codec_iface_t *iface,
                                       const vpx_codec_enc_cfg_t *cfg, vpx_codec_flags_t flags)
    vpx_codec_err_t vpx_codec_encode(vpx_codec_ctx_t *ctx, const vpx_image_t *img,
                                     vpx_codec_pts_t pts, unsigned long duration,
                                     vpx_enc_frame_flags_t flags, unsigned long deadline)
    const vpx_codec_cx_pkt_t *vpx_codec_get_cx_data(vpx_codec_ctx_t *ctx,
                                                    vpx_codec_iter_t *iter)


cdef extern from "vpx/vp8cx.h" nogil:
    vpx_codec_iface_t *vpx_codec_vp8_cx()
    enum:
        VP8E_SET_CPUUSED
        VP8E_SET_ENABLEAUTOALTREF
        VP8E_SET_TOKEN_PARTITIONS
        VP8E_SET_TUNING
        VP8E_SET_CQ_LEVEL
    enum:
        VP8_TUNE_SSIM
    enum:
        VP8_ONE_TOKENPARTITION


# Whether libvpx is linked in with its allocations zeroed and padded (heap.c, setup.py): only
# then is the output a function of the input alone (with --tune=ssim libvpx reads heap bytes
# beyond one of its allocations).
ZEROED_HEAP = bool(EXCAMERA_ZEROED_HEAP)
FRAME_IS_KEY = VPX_FRAME_IS_KEY
FRAME_IS_INVISIBLE = VPX_FRAME_IS_INVISIBLE
MAX_DIMENSION = 16383  # VP8's frame header holds 14 bits of width and height
MAX_LAG_IN_FRAMES = 25  # libvpx's limit for VP8
MAX_CQ_LEVEL = 63


def version() -> str:
    """libvpx's version (`vpx_codec_version_str`), e.g. "v1.12.0"."""
    return vpx_codec_version_str().decode("ascii", "replace")


def encoder_name() -> str:
    """The VP8 encoder's name with the version, as `vpxenc --help` lists it, e.g.
    "WebM Project VP8 Encoder v1.12.0"."""
    return vpx_codec_iface_name(vpx_codec_vp8_cx()).decode("ascii", "replace")


cdef class Packet:
    """One compressed frame as libvpx emitted it: `data` (what an IVF frame holds), `pts` and
    `duration` in the time base 1/fps, and libvpx's frame flags (`FRAME_IS_KEY`,
    `FRAME_IS_INVISIBLE` for a hidden alt-ref frame)."""

    cdef readonly bytes data
    cdef readonly int64_t pts
    cdef readonly unsigned long duration
    cdef readonly unsigned int flags

    def __init__(self, bytes data, int64_t pts, unsigned long duration, unsigned int flags):
        self.data = data
        self.pts = pts
        self.duration = duration
        self.flags = flags

    @property
    def key(self) -> bool:
        return bool(self.flags & VPX_FRAME_IS_KEY)

    @property
    def shown(self) -> bool:
        return not self.flags & VPX_FRAME_IS_INVISIBLE

    def __repr__(self) -> str:
        kind = "key" if self.key else "inter"
        return (f"Packet({len(self.data)} bytes, {kind}, {'shown' if self.shown else 'hidden'}, "
                f"pts={self.pts})")


cdef str _text(const char *value):
    return value.decode("utf-8", "replace") if value != NULL else ""


cdef str _context_error(vpx_codec_ctx_t *ctx):
    message = _text(vpx_codec_error(ctx))
    detail = _text(vpx_codec_error_detail(ctx))
    return f"{message}: {detail}" if detail else message


cdef class _Encoder:
    """One encoder context, destroyed with the object (also when an error escapes)."""

    cdef vpx_codec_ctx_t ctx
    cdef bint live

    def __cinit__(self):
        memset(&self.ctx, 0, sizeof(self.ctx))
        self.live = False

    cdef open(self, vpx_codec_enc_cfg_t *cfg, str what):
        if vpx_codec_enc_init(&self.ctx, vpx_codec_vp8_cx(), cfg, 0) != VPX_CODEC_OK:
            raise LibvpxError(f"libvpx: cannot start the {what}: {_context_error(&self.ctx)}")
        self.live = True

    cdef control(self, int ctrl_id, int value, str name):
        if vpx_codec_control_(&self.ctx, ctrl_id, value) != VPX_CODEC_OK:
            raise LibvpxError(f"libvpx: {name}={value} refused: {_context_error(&self.ctx)}")

    cdef close(self):
        if self.live:
            self.live = False
            vpx_codec_destroy(&self.ctx)

    def __dealloc__(self):
        if self.live:
            vpx_codec_destroy(&self.ctx)


cdef int _int_in(value, str name, int low, int high) except? -1:
    if not isinstance(value, int) or isinstance(value, bool):
        raise LibvpxError(f"libvpx: {name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise LibvpxError(f"libvpx: {name} must be in {low}..{high}, got {value}")
    return value


cdef list _planes_of(pictures, int width, int height):
    """Each picture's (y, u, v) as 2-D uint8 arrays whose rows are contiguous and whose chroma
    planes have one row stride, checked against the frame size (kept referenced while libvpx
    reads them)."""
    cdef int cw = (width + 1) // 2
    cdef int ch = (height + 1) // 2
    shapes = ((height, width), (ch, cw), (ch, cw))
    result = []
    for index, picture in enumerate(pictures):
        planes = getattr(picture, "planes", picture)
        try:
            planes = tuple(planes)
        except TypeError:
            raise LibvpxError(
                f"libvpx: picture {index} is neither an Image nor (y, u, v) planes"
            ) from None
        if len(planes) != 3:
            raise LibvpxError(f"libvpx: picture {index} has {len(planes)} planes, not 3")
        arrays = []
        for name, plane, shape in zip("yuv", planes, shapes):
            array = np.asarray(plane)
            if array.dtype != np.uint8 or array.shape != shape:
                raise LibvpxError(
                    f"libvpx: plane {name} of picture {index} is {array.dtype} {array.shape}; "
                    f"a {width}x{height} frame needs uint8 {shape}"
                )
            if array.strides[1] != 1 or array.strides[0] < shape[1]:
                array = np.ascontiguousarray(array)
            if array.strides[0] > 0x7FFFFFFF:
                raise LibvpxError(f"libvpx: plane {name} of picture {index}: rows too far apart")
            arrays.append(array)
        if arrays[1].strides[0] != arrays[2].strides[0]:
            # libvpx takes the V plane's row stride to be the U plane's.
            arrays[1:] = [np.ascontiguousarray(plane) for plane in arrays[1:]]
        result.append(tuple(arrays))
    return result


cdef const uint8_t *_start(const uint8_t[:, :] plane):
    return &plane[0, 0]


cdef int _wrap(vpx_image_t *img, tuple planes, int width, int height) except -1:
    """Point `img` at one picture's planes (libvpx copies them into its look-ahead buffer)."""
    cdef unsigned char *luma = <unsigned char *>_start(planes[0])
    if vpx_img_wrap(img, VPX_IMG_FMT_I420, width, height, 1, luma) == NULL:
        raise LibvpxError(f"libvpx: cannot describe a {width}x{height} I420 picture")
    for i in range(3):
        img.planes[i] = <unsigned char *>_start(planes[i])
        img.stride[i] = planes[i].strides[0]
    return 0


cdef tuple _run_pass(vpx_codec_enc_cfg_t *cfg, list pictures, int width, int height,
                     int cq_level):
    """One pass as vpxenc runs it: every picture, then flush calls while frames keep coming.
    Returns (packets, statistics): frame packets in output order, and the first pass's
    statistics packets concatenated."""
    cdef _Encoder encoder = _Encoder()
    cdef vpx_image_t image
    cdef vpx_image_t *img
    cdef const vpx_codec_cx_pkt_t *pkt
    cdef vpx_codec_iter_t iterator
    cdef vpx_codec_err_t status
    cdef int64_t frames_in = 0
    cdef unsigned long deadline = VPX_DL_GOOD_QUALITY
    cdef bint frame_avail = True, got_data = False
    cdef int count = len(pictures)
    what = "first pass" if cfg.g_pass == VPX_RC_FIRST_PASS else "second pass"
    packets = []
    stats = []

    encoder.open(cfg, what)
    # In the order vpxenc applies them: the order of the options on its command line.
    encoder.control(VP8E_SET_CPUUSED, 0, "cpu-used")
    encoder.control(VP8E_SET_CQ_LEVEL, cq_level, "cq-level")
    encoder.control(VP8E_SET_ENABLEAUTOALTREF, 1, "auto-alt-ref")
    encoder.control(VP8E_SET_TUNING, VP8_TUNE_SSIM, "tune")
    encoder.control(VP8E_SET_TOKEN_PARTITIONS, VP8_ONE_TOKENPARTITION, "token-parts")

    memset(&image, 0, sizeof(image))
    while frame_avail or got_data:
        frame_avail = frames_in < count
        if frame_avail:
            frames_in += 1
            _wrap(&image, pictures[frames_in - 1], width, height)
            img = &image
        else:
            img = NULL
        # vpxenc's timestamps: frame k (from 0) at k * fps / timebase = k, lasting 1; the flush
        # calls repeat the last frame's.
        with nogil:
            status = vpx_codec_encode(&encoder.ctx, img, frames_in - 1, 1, 0, deadline)
        # A chunk's two passes take seconds at 720p: a signal (Ctrl-C, the pool's SIGTERM)
        # must end the task at the next frame, not after the chunk, so that its clean-up runs
        # within the worker's grace (runner.ORPHAN_GRACE_SECONDS).
        PyErr_CheckSignals()
        if status != VPX_CODEC_OK:
            where = f"picture {frames_in - 1}" if img != NULL else "the end of the chunk"
            raise LibvpxError(
                f"libvpx: {what} failed at {where}: {_context_error(&encoder.ctx)}"
            )
        got_data = False
        iterator = NULL
        while True:
            pkt = vpx_codec_get_cx_data(&encoder.ctx, &iterator)
            if pkt == NULL:
                break
            if pkt.kind == VPX_CODEC_CX_FRAME_PKT:
                # A whole frame: the encoder was not asked for one packet per partition.
                got_data = True
                packets.append(Packet(
                    (<const char *>pkt.data.frame.buf)[:pkt.data.frame.sz],
                    pkt.data.frame.pts, pkt.data.frame.duration, pkt.data.frame.flags,
                ))
            elif pkt.kind == VPX_CODEC_STATS_PKT:
                stats.append((<const char *>pkt.data.twopass_stats.buf)[
                    :pkt.data.twopass_stats.sz])
    encoder.close()
    return packets, b"".join(stats)


def encode_two_pass_packets(pictures, width, height, fps, *, cq_level, lag_in_frames):
    """`encode_two_pass`, with each frame's timestamps and libvpx flags (`Packet`)."""
    cdef vpx_codec_enc_cfg_t cfg
    cdef bytes stats
    cdef int w = _int_in(width, "width", 1, MAX_DIMENSION)
    cdef int h = _int_in(height, "height", 1, MAX_DIMENSION)
    try:
        fps_num, fps_den = fps
    except (TypeError, ValueError):
        raise LibvpxError(f"libvpx: fps must be (numerator, denominator), got {fps!r}") from None
    # Checked here to name the culprit; libvpx checks its own limits too (e.g. of the time base).
    cdef int rate_num = _int_in(fps_num, "fps numerator", 1, 0x7FFFFFFF)
    cdef int rate_den = _int_in(fps_den, "fps denominator", 1, 0x7FFFFFFF)
    cdef int cq = _int_in(cq_level, "cq level", 0, MAX_CQ_LEVEL)
    cdef int lag = _int_in(lag_in_frames, "lag in frames", 0, MAX_LAG_IN_FRAMES)
    planes = _planes_of(pictures, w, h)
    if not planes:
        raise LibvpxError("libvpx: no pictures to encode")

    status = vpx_codec_enc_config_default(vpx_codec_vp8_cx(), &cfg, 0)
    if status != VPX_CODEC_OK:
        reason = _text(vpx_codec_err_to_string(status))
        raise LibvpxError(f"libvpx: no default configuration: {reason}")
    # vpxenc: the input's size, bit depth and frame rate (which replaces its default time base).
    cfg.g_w = w
    cfg.g_h = h
    cfg.g_input_bit_depth = 8
    cfg.g_timebase.num = rate_den
    cfg.g_timebase.den = rate_num
    # The options of vpxenc_command that are configuration fields.
    cfg.g_threads = 1
    cfg.rc_end_usage = VPX_CQ
    cfg.rc_min_quantizer = 0
    cfg.rc_max_quantizer = 63
    cfg.rc_target_bitrate = 4294967295
    cfg.rc_buf_initial_sz = 10000
    cfg.rc_buf_optimal_sz = 20000
    cfg.rc_buf_sz = 40000
    cfg.rc_undershoot_pct = 100
    cfg.g_lag_in_frames = lag
    cfg.kf_min_dist = 0
    cfg.kf_max_dist = 99999
    cfg.kf_mode = VPX_KF_DISABLED

    cfg.g_pass = VPX_RC_FIRST_PASS
    _, stats = _run_pass(&cfg, planes, w, h, cq)
    cfg.g_pass = VPX_RC_LAST_PASS
    cfg.rc_twopass_stats_in.buf = <void *><const char *>stats
    cfg.rc_twopass_stats_in.sz = len(stats)
    packets, _ = _run_pass(&cfg, planes, w, h, cq)
    return packets


def encode_two_pass(pictures, width, height, fps, *, cq_level, lag_in_frames) -> list:
    """Encode a chunk's pictures with libvpx's VP8 encoder in two passes, as vpxenc does with
    `shared.pipeline.vpx.vpxenc_command`: the frames in output order, one per IVF frame, hidden
    alt-ref frames included; the first is the only key frame.

    pictures: `shared.codec.image.Image`s, or (y, u, v) uint8 arrays of shapes (height, width)
    and ((height + 1) // 2, (width + 1) // 2); fps: (numerator, denominator), which sets the
    time base (libvpx chooses its good-quality mode only when a frame lasts under a second).
    Raises `LibvpxError` (a `ToolError`) with libvpx's detail on any refusal or failure.
    The GIL is released while libvpx encodes.
    """
    return [packet.data for packet in encode_two_pass_packets(
        pictures, width, height, fps, cq_level=cq_level, lag_in_frames=lag_in_frames
    )]
