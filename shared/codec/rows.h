/* Macroblock rows on several threads, in a wavefront (the rebase's serial chain).
 *
 * Workers take rows in order from a shared counter, and a macroblock waits until the row
 * above has finished the macroblock above and to its right (whose pixels and token contexts
 * it reads). Rows are handed out in order and each waits only on the row before, which an
 * earlier-started worker holds, so any number of workers finishes, one included: if a thread
 * cannot be created, the caller's thread still does all the rows. The pixels, levels and
 * contexts each macroblock writes do not depend on which worker coded it, so the output is
 * the same for every thread count. */
#ifndef EXCAMERA_ROWS_H
#define EXCAMERA_ROWS_H

#include <pthread.h>
#include <sched.h>

#define ROWS_MAX_THREADS 8

typedef void (*rows_worker)(void *job, int worker);

typedef struct {
    rows_worker fn;
    void *job;
    int worker;
} rows_start;

static void *rows_entry(void *arg) {
    rows_start *s = (rows_start *)arg;
    s->fn(s->job, s->worker);
    return NULL;
}

/* Run fn(job, 0) on this thread and fn(job, w) for w = 1..threads-1 on new threads; returns
 * once all have returned. */
static inline void rows_run(rows_worker fn, void *job, int threads) {
    pthread_t ids[ROWS_MAX_THREADS];
    rows_start starts[ROWS_MAX_THREADS];
    int started = 0;
    if (threads > ROWS_MAX_THREADS) threads = ROWS_MAX_THREADS;
    for (int w = 1; w < threads; ++w) {
        starts[w].fn = fn;
        starts[w].job = job;
        starts[w].worker = w;
        if (pthread_create(&ids[w], NULL, rows_entry, &starts[w]) != 0) break;
        started = w;
    }
    fn(job, 0);
    for (int w = 1; w <= started; ++w) pthread_join(ids[w], NULL);
}

static inline int rows_take(int *next_row) {
    return __atomic_fetch_add(next_row, 1, __ATOMIC_RELAXED);
}

/* A row's progress: how many of its macroblocks are done (release: their writes are seen by
 * whoever acquires the count). */
static inline void rows_publish(int *progress, int done) {
    __atomic_store_n(progress, done, __ATOMIC_RELEASE);
}

static inline void rows_wait(const int *progress, int needed) {
    int spins = 0;
    while (__atomic_load_n(progress, __ATOMIC_ACQUIRE) < needed) {
        if (++spins < 256) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            sched_yield();
        }
    }
}

#endif
