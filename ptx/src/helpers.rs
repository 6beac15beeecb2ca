//! The helper threads of a thread that launches kernels, and the CPUs they run on.
//!
//! A launch's blocks are spread over the launching thread and its helpers ([`with_helpers`]).
//! Helpers sleep between launches; a thread woken by another tends to be placed on the
//! waker's CPU, and where it is, the launch runs at one CPU's speed while another CPU sits
//! idle, until the scheduler moves one of them (milliseconds later, longer than most
//! launches: after a millisecond's pause between launches, `soft_max` launches took the
//! one-thread time, 0.63 ms, against 0.35 ms back to back). So the helpers are kept off the
//! CPU the launching thread runs on, where it may run on others: their affinity is set to
//! its own less its CPU, again whenever it runs on another.

use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::{gettid, Pid};
use std::cell::RefCell;
use std::sync::{Arc, Mutex};

/// A launching thread's helpers.
struct Helpers {
    pool: rayon_core::ThreadPool,
    count: usize,
    /// The helpers' thread ids, as each started.
    tids: Arc<Mutex<Vec<Pid>>>,
    /// The CPU the helpers were last kept off, and how many of them had started then.
    off: Option<(usize, usize)>,
}

thread_local! {
    /// The calling thread's helper threads, kept from one launch to the next: starting
    /// threads for every launch cost more than many a kernel runs.
    static HELPERS: RefCell<Option<Helpers>> = const { RefCell::new(None) };
}

/// Runs `f` with `n` helper threads of the calling thread (made on first use, made again
/// when `n` changes, ended with the thread), kept off the calling thread's CPU. Each thread
/// that launches kernels (a device's stream) has helpers of its own, so that launches from
/// different threads share the host's CPUs as their threads do, none queued behind
/// another's. Where no threads can be made, `f` gets `None` (and starts threads for the
/// launch itself).
pub(crate) fn with_helpers<R>(n: usize, f: impl FnOnce(Option<&rayon_core::ThreadPool>) -> R) -> R {
    HELPERS.with(|h| {
        let mut h = h.borrow_mut();
        if h.as_ref().is_none_or(|h| h.count != n) {
            *h = None;
            let tids = Arc::new(Mutex::new(Vec::with_capacity(n)));
            let started = Arc::clone(&tids);
            match rayon_core::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(|i| format!("ptx-helper-{i}"))
                .start_handler(move |_| lock(&started).push(gettid()))
                .build()
            {
                Ok(pool) => {
                    *h = Some(Helpers {
                        pool,
                        count: n,
                        tids,
                        off: None,
                    })
                }
                Err(e) => log::warn!("no helper threads for launches ({e}): each starts its own"),
            }
        }
        if let Some(h) = h.as_mut() {
            h.keep_off_caller();
        }
        f(h.as_ref().map(|h| &h.pool))
    })
}

impl Helpers {
    /// Sets the helpers' affinity to the calling thread's less the CPU it runs on, where
    /// that CPU or the number of helpers started changed since the last time. Best effort:
    /// where the CPU is not known, the calling thread may run on one CPU only, or a helper
    /// cannot be moved, they stay where they are allowed to be (and a debug line says so).
    fn keep_off_caller(&mut self) {
        let Ok(cpu) = sched_getcpu() else {
            return;
        };
        let tids = lock(&self.tids);
        if self.off == Some((cpu, tids.len())) {
            return;
        }
        self.off = Some((cpu, tids.len()));
        let Ok(mut set) = sched_getaffinity(Pid::from_raw(0)) else {
            return;
        };
        let allowed = (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .count();
        if allowed < 2 || set.unset(cpu).is_err() {
            return;
        }
        for &tid in tids.iter() {
            if let Err(e) = sched_setaffinity(tid, &set) {
                log::debug!("helper thread {tid} not kept off CPU {cpu}: {e}");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Helpers run anywhere the launching thread may, but on its CPU: each helper's
    /// affinity, read back by the helper, is the caller's less the CPU the caller was on
    /// (where the caller may run on more than one).
    #[test]
    fn helpers_are_kept_off_the_launching_threads_cpu() {
        let caller = sched_getaffinity(Pid::from_raw(0)).expect("the caller's affinity");
        let cpus: Vec<usize> = (0..CpuSet::count())
            .filter(|&c| caller.is_set(c).unwrap_or(false))
            .collect();
        // Every helper started (and its thread id known) before the next call.
        with_helpers(2, |pool| pool.expect("helper threads").broadcast(|_| ()));
        for _ in 0..100 {
            let before = sched_getcpu().expect("the caller's CPU");
            let seen = with_helpers(2, |pool| {
                let pool = pool.expect("helper threads");
                pool.broadcast(|_| sched_getaffinity(Pid::from_raw(0)).expect("an affinity"))
            });
            // (Where the caller moved during the call, the helpers may have been set for
            // either CPU: look again.)
            if sched_getcpu().expect("the caller's CPU") != before {
                continue;
            }
            assert_eq!(seen.len(), 2);
            for mine in seen {
                for &c in &cpus {
                    let want = cpus.len() < 2 || c != before;
                    assert_eq!(
                        mine.is_set(c).expect("a CPU"),
                        want,
                        "CPU {c}, caller on {before}"
                    );
                }
            }
            return;
        }
        panic!("the calling thread moved between CPUs in every one of 100 calls");
    }
}
