/* libvpx's heap inside shared.libvpx.encoder: every allocation zeroed, with zeroed padding.
 *
 * libvpx is linked in statically with -Wl,--wrap=malloc,--wrap=calloc (setup.py), so its
 * calls to malloc and calloc come here. Why: with --tune=ssim, VP8's build_activity_map
 * (vp8/encoder/encodeframe.c; libvpx 1.12 to 1.16 at least) runs the trellis
 * (vp8_optimize_mby) with the previous frame's xd->above_context, which by then points one
 * entry past the end of cm->above_context: the encoder takes entropy contexts from the 9 heap
 * bytes just beyond that allocation (pt = above + left then indexes token_costs). In a fresh
 * vpxenc process those bytes are the never-written tail of the block, zero, except for frame
 * widths of 16k or 16k+9 macroblocks, where the last one is the low byte of the next heap
 * block's size field. In a long-lived process they are whatever an earlier owner of the memory
 * left there, and the same input gives different frames from one call to the next (valgrind:
 * "use of uninitialised value" in optimize_b). Zeroing every block and PAD bytes beyond it
 * gives libvpx a fresh heap's zeroes every time: the output is a function of the input alone,
 * and vpxenc's own, except where vpxenc finds that size byte and it changes a decision (rare,
 * and a matter of vpxenc's heap layout).
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define EXCAMERA_HEAP_PAD 64 /* covers the stale entry (9 bytes) and SIMD over-reads */

void *__real_calloc(size_t count, size_t size);

__attribute__((visibility("hidden"))) void *__wrap_malloc(size_t size) {
  if (size > SIZE_MAX - EXCAMERA_HEAP_PAD) return NULL;
  return __real_calloc(1, size + EXCAMERA_HEAP_PAD);
}

__attribute__((visibility("hidden"))) void *__wrap_calloc(size_t count, size_t size) {
  if (size != 0 && count > (SIZE_MAX - EXCAMERA_HEAP_PAD) / size) return NULL;
  return __real_calloc(1, count * size + EXCAMERA_HEAP_PAD);
}
