//! Keeps the kernels' pool awake through a run of small parallel sections.
//!
//! A decoder step runs dozens of kernels whose parallel sections last tens of
//! microseconds each. Between two of them rayon's idle threads go to sleep within a few
//! microseconds, and every section then waits for a sleeping thread to be woken (a futex
//! call and a trip through the OS scheduler). [`keep_warm`] has the pool's other threads
//! spin while a stretch of such work runs, taking its jobs as soon as they appear: the
//! same work, in the same splits, so the results are the same bits.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Spinners running now (for tests: each must stop when its stretch of work ends).
static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// Whether [`keep_warm`] spins here: on a thread of a pool of at least two threads, with
/// no more threads than the machine runs at once (spinning on an oversubscribed pool
/// would take cores from the threads doing the work), unless `AMANUENSIS_SPIN=0`.
fn spins() -> bool {
    if rayon::current_thread_index().is_none() {
        return false;
    }
    let threads = rayon::current_num_threads();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let allowed =
        *ALLOWED.get_or_init(|| std::env::var("AMANUENSIS_SPIN").map_or(true, |v| v != "0"));
    allowed && threads >= 2 && threads <= cores
}

/// Runs `f`, and while it runs has the other threads of the current rayon pool spin,
/// running any job of the pool (`f`'s parallel sections' among them) as soon as it
/// appears. They stop when `f` returns or unwinds. Outside a pool, `f` just runs.
///
/// A spinner never blocks `f`: it only runs pool jobs and checks a flag `f`'s end sets.
pub(crate) fn keep_warm<R>(f: impl FnOnce() -> R) -> R {
    if !spins() {
        return f();
    }
    let me = rayon::current_thread_index();
    let stop = Arc::new(AtomicBool::new(false));
    /// Sets the flag when `f` ends, also by unwinding.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let _stop = Stop(stop.clone());
    rayon::spawn_broadcast(move |ctx| {
        // The calling thread's copy: it runs `f` (or has finished it) already. A thread
        // inside a stretch of its own does not spin for another one: two threads each
        // spinning for the other's stretch, above their own, would wait for good.
        if Some(ctx.index()) == me || stop.load(Ordering::Acquire) || IN_STRETCH.get() > 0 {
            return;
        }
        SPINNING.fetch_add(1, Ordering::AcqRel);
        let mut idle_since: Option<Instant> = None;
        while !stop.load(Ordering::Acquire) {
            if rayon::yield_now() == Some(rayon::Yield::Executed) {
                idle_since = None;
                continue;
            }
            // A spinner may have been picked up by a thread waiting, inside some job, for
            // that job's parts; if `f` waits on that job in turn, only the spinner's
            // return lets it go on. So a spinner that finds no work for a while returns.
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() > IDLE_LIMIT {
                break;
            }
            std::hint::spin_loop();
        }
        SPINNING.fetch_sub(1, Ordering::AcqRel);
    });
    IN_STRETCH.set(IN_STRETCH.get() + 1);
    /// Leaves the stretch when `f` ends, also by unwinding.
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_STRETCH.set(IN_STRETCH.get() - 1);
        }
    }
    let _leave = Leave;
    f()
}

/// How long a spinner runs without finding work before it returns: longer than the host's
/// work between two decoder steps, short enough that a spinner in another thread's way
/// costs little.
const IDLE_LIMIT: Duration = Duration::from_micros(500);

thread_local! {
    /// [`keep_warm`] stretches running on this thread.
    static IN_STRETCH: Cell<usize> = const { Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a test pool")
    }

    /// Waits until no spinner runs (they stop soon after their stretch ends).
    fn spinners_stop() {
        let t0 = Instant::now();
        while SPINNING.load(Ordering::Acquire) != 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "a spinner kept running after its work ended"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_work_runs_with_its_parallel_sections_and_the_spinners_stop() {
        // Two threads, as the machines this runs on have at least two cores; with fewer,
        // `keep_warm` runs `f` alone and the sums below still hold.
        let p = pool(2);
        let sums: Vec<u64> = p.install(|| {
            keep_warm(|| {
                (0..200u64)
                    .map(|i| (0..10_000u64).into_par_iter().map(|x| x * i).sum::<u64>())
                    .collect()
            })
        });
        for (i, s) in sums.iter().enumerate() {
            assert_eq!(*s, i as u64 * (10_000 * 9_999 / 2));
        }
        spinners_stop();
    }

    #[test]
    fn nested_stretches_and_stretches_inside_parallel_jobs_finish() {
        let p = pool(2);
        let total: u64 = p.install(|| {
            (0..8u64)
                .into_par_iter()
                .map(|i| {
                    keep_warm(|| {
                        keep_warm(|| (0..1000u64).into_par_iter().map(|x| x + i).sum::<u64>())
                    })
                })
                .sum()
        });
        assert_eq!(total, 8 * (1000 * 999 / 2) + 1000 * (8 * 7 / 2));
        spinners_stop();
    }

    #[test]
    fn a_panic_in_the_work_stops_the_spinners_and_reaches_the_caller() {
        let p = pool(2);
        let r = p.install(|| {
            std::panic::catch_unwind(|| keep_warm(|| -> u32 { panic!("the work failed") }))
        });
        assert!(r.is_err());
        spinners_stop();
        // The pool still works.
        assert_eq!(p.install(|| (0..100u32).into_par_iter().sum::<u32>()), 4950);
    }

    #[test]
    fn two_stretches_at_once_on_one_pool_both_finish() {
        // Each thread runs a stretch of its own and may meet the other's spinner while it
        // waits inside one of its sections; neither may wait for the other for good.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let p = pool(2);
            let work = || {
                keep_warm(|| {
                    (0..300u64)
                        .map(|i| (0..4_000u64).into_par_iter().map(|x| x ^ i).sum::<u64>())
                        .sum::<u64>()
                })
            };
            for _ in 0..2000 {
                let (a, b) = p.install(|| rayon::join(work, work));
                assert_eq!(a, b);
            }
            tx.send(()).ok();
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("two stretches at once did not finish within a minute");
        spinners_stop();
    }

    #[test]
    fn outside_a_pool_the_work_just_runs() {
        assert_eq!(keep_warm(|| 7), 7);
    }
}
