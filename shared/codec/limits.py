"""What a VP8 frame may measure: 14 bits a side in a key frame's header, and an area past which
this codec refuses a frame before it allocates anything (8192 x 4352, above 8K UHD). Plain
Python, so that what only checks an input (the split, the API) need not load the codec."""

MAX_FRAME_SIDE = 16383
MAX_FRAME_AREA = 8192 * 4352
