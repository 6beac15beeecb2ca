//! GPU utilisation as NVML reports it: the share of the last complete sampling period
//! ([`PERIOD`]) during which at least one kernel ran, in percent. Every context keeps one
//! meter for its own kernels and feeds its executor's meter for the whole device; PD_STATS
//! and MGMT_QUERY read them (spec §6.9).

use std::sync::Mutex;
use std::time::{Duration, Instant};
use vgpu_os::lock;

/// The sampling period.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Kernel time over sampling periods; kernels may overlap (several streams), and the time
/// any of them runs counts once.
pub struct UtilMeter {
    state: Mutex<State>,
}

struct State {
    /// Start of the current period.
    start: Instant,
    /// Kernel time counted in the current period (up to `since` while kernels run).
    busy: Duration,
    /// The last complete period's figure, in percent.
    last: u32,
    /// Kernels running.
    running: u32,
    /// While kernels run: since when they have been counted.
    since: Instant,
}

impl State {
    /// Closes every period that ended by `now`.
    fn roll(&mut self, now: Instant) {
        while now.saturating_duration_since(self.start) >= PERIOD {
            let end = self.start + PERIOD;
            if self.running > 0 {
                self.busy += end.saturating_duration_since(self.since);
                self.since = end;
            }
            self.last = percent(self.busy);
            self.busy = Duration::ZERO;
            self.start = end;
            if self.running == 0 && now.saturating_duration_since(self.start) >= PERIOD {
                // Whole periods without a kernel since.
                self.last = 0;
                self.start = now;
            }
        }
    }
}

fn percent(busy: Duration) -> u32 {
    (busy.as_nanos() * 100 / PERIOD.as_nanos()).min(100) as u32
}

impl Default for UtilMeter {
    fn default() -> Self {
        let now = Instant::now();
        UtilMeter {
            state: Mutex::new(State {
                start: now,
                busy: Duration::ZERO,
                last: 0,
                running: 0,
                since: now,
            }),
        }
    }
}

impl UtilMeter {
    /// A kernel starts at `now`.
    pub fn begin(&self, now: Instant) {
        let mut s = lock(&self.state);
        s.roll(now);
        if s.running == 0 {
            s.since = now.max(s.start);
        }
        s.running += 1;
    }

    /// A kernel that [`begin`](Self::begin) counted ends at `now`.
    pub fn end(&self, now: Instant) {
        let mut s = lock(&self.state);
        s.roll(now);
        s.running = s.running.saturating_sub(1);
        if s.running == 0 {
            let since = s.since.max(s.start);
            s.busy += now.saturating_duration_since(since);
        }
    }

    /// Utilisation over the last complete period, in percent.
    pub fn percent(&self, now: Instant) -> u32 {
        let mut s = lock(&self.state);
        s.roll(now);
        s.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilisation_is_the_kernel_time_of_the_last_period() {
        let m = UtilMeter::default();
        let t0 = lock(&m.state).start;
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(m.percent(at(500)), 0);
        // 250 ms of kernels in the first period, two of them overlapping.
        m.begin(at(100));
        m.begin(at(150));
        m.end(at(300));
        m.end(at(350));
        assert_eq!(m.percent(at(999)), 0, "the period is not over");
        assert_eq!(m.percent(at(1000)), 25);
        // A kernel from 1.9 s to 2.4 s: 10% of the second period, 40% of the third.
        m.begin(at(1900));
        assert_eq!(m.percent(at(2100)), 10);
        m.end(at(2400));
        assert_eq!(m.percent(at(3000)), 40);
        // A kernel running through a whole period counts it fully.
        m.begin(at(3000));
        assert_eq!(m.percent(at(4500)), 100);
        m.end(at(4500));
        // Long idle: 0.
        assert_eq!(m.percent(at(9000)), 0);
        assert_eq!(m.percent(at(60_000)), 0);
    }
}
