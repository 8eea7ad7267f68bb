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
/// A spinner only runs pool jobs and checks a flag `f`'s end sets, so `f` never waits for
/// it; a thread waiting under one (see [`IDLE_LIMIT`]) waits at most until it finds no
/// work.
pub(crate) fn keep_warm<R>(f: impl FnOnce() -> R) -> R {
    stretch(f, IDLE_LIMIT, None)
}

/// Counts of a stretch's spinners (tests).
#[derive(Default)]
struct Probe {
    /// Spinners that have started.
    started: AtomicUsize,
    /// Spinners spinning now.
    running: AtomicUsize,
}

/// [`keep_warm`] with spinners that return after `idle_limit` without work, counted in
/// `probe` (tests).
fn stretch<R>(f: impl FnOnce() -> R, idle_limit: Duration, probe: Option<Arc<Probe>>) -> R {
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
        if let Some(p) = &probe {
            p.started.fetch_add(1, Ordering::AcqRel);
            p.running.fetch_add(1, Ordering::AcqRel);
        }
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
            if since.elapsed() > idle_limit {
                break;
            }
            std::hint::spin_loop();
        }
        if let Some(p) = &probe {
            p.running.fetch_sub(1, Ordering::AcqRel);
        }
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

/// How long a spinner runs without finding work before it returns: longer than the gaps
/// between a decoder step's sections, short enough that a spinner picked up by a thread
/// waiting inside some job (which the stretch may wait on in turn) costs little.
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

    /// Whether `keep_warm` spins on `p` (on a machine with fewer cores than its threads, or
    /// with `AMANUENSIS_SPIN=0`, it runs `f` alone, and the tests check only its results).
    fn spinning(p: &rayon::ThreadPool) -> bool {
        p.install(spins)
    }

    /// Spinners in these tests wait this long without work before returning, so that
    /// only the stretch's end stops them within the tests' time limits.
    const PATIENT: Duration = Duration::from_secs(30);

    /// Waits until none of the probe's spinners runs, for at most `limit`.
    fn spinners_stop(probe: &Probe, limit: Duration) {
        let t0 = Instant::now();
        while probe.running.load(Ordering::Acquire) != 0 {
            assert!(
                t0.elapsed() < limit,
                "a spinner kept running {limit:?} after its stretch ended"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Waits (spinning, as `f` would compute) until a spinner of the probe has started,
    /// for at most `limit`; whether one did.
    fn a_spinner_runs(probe: &Probe, limit: Duration) -> bool {
        let t0 = Instant::now();
        while probe.started.load(Ordering::Acquire) == 0 {
            if t0.elapsed() > limit {
                return false;
            }
            std::hint::spin_loop();
        }
        true
    }

    #[test]
    fn the_other_thread_spins_through_the_stretch_and_stops_at_its_end() {
        let p = pool(2);
        let on = spinning(&p);
        let probe = Arc::new(Probe::default());
        let (spun, sums) = p.install(|| {
            stretch(
                || {
                    // Waking the other thread may take milliseconds.
                    let spun = on && a_spinner_runs(&probe, Duration::from_secs(20));
                    let sums: Vec<u64> = (0..200u64)
                        .map(|i| (0..10_000u64).into_par_iter().map(|x| x * i).sum::<u64>())
                        .collect();
                    (spun, sums)
                },
                PATIENT,
                Some(probe.clone()),
            )
        });
        for (i, s) in sums.iter().enumerate() {
            assert_eq!(*s, i as u64 * (10_000 * 9_999 / 2));
        }
        assert_eq!(spun, on, "the other thread never spun");
        // Only the stretch's end can have stopped it this soon.
        spinners_stop(&probe, Duration::from_secs(5));
    }

    #[test]
    fn a_spinner_without_work_returns_before_the_stretch_ends() {
        let p = pool(2);
        let on = spinning(&p);
        let probe = Arc::new(Probe::default());
        let returned = p.install(|| {
            stretch(
                || {
                    // No parallel work here: once it runs, the spinner finds none.
                    if on && !a_spinner_runs(&probe, Duration::from_secs(20)) {
                        return false;
                    }
                    let t0 = Instant::now();
                    while probe.running.load(Ordering::Acquire) != 0 {
                        if t0.elapsed() > Duration::from_secs(20) {
                            return false;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    true
                },
                Duration::from_millis(1),
                Some(probe.clone()),
            )
        });
        assert!(
            returned,
            "no spinner started, or an idle one kept spinning through the stretch"
        );
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
    }

    #[test]
    fn a_panic_in_the_work_stops_the_spinners_and_reaches_the_caller() {
        let p = pool(2);
        let on = spinning(&p);
        let probe = Arc::new(Probe::default());
        let r = p.install(|| {
            std::panic::catch_unwind(|| {
                stretch(
                    || -> u32 {
                        if on {
                            a_spinner_runs(&probe, Duration::from_secs(20));
                        }
                        panic!("the work failed")
                    },
                    PATIENT,
                    Some(probe.clone()),
                )
            })
        });
        assert!(r.is_err());
        spinners_stop(&probe, Duration::from_secs(5));
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
        rx.recv_timeout(Duration::from_secs(120))
            .expect("two stretches at once did not finish within two minutes");
    }

    #[test]
    fn outside_a_pool_the_work_just_runs() {
        assert_eq!(keep_warm(|| 7), 7);
    }
}
