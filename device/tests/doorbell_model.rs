//! A model check of the doorbell handshake of spec §5.6 with `loom`, which runs every
//! interleaving (and every weak-memory outcome the fences allow) of three threads: a client
//! that publishes an entry, the device's worker that parks on the empty ring, and a
//! completion that sets and clears PARKED bit 1 meanwhile (`engine/queue.rs` updates the
//! bits under one lock, as here). In every outcome the parked worker is not left asleep with
//! an entry it has not seen: either it saw SQ_TAIL move, or the client saw PARKED set and
//! rang. The same model with the old update (the completion storing 0 when done) fails.

use loom::sync::atomic::{fence, AtomicU32, Ordering::*};
use loom::sync::{Arc, Mutex};
use loom::thread;

const IDLE: u32 = 1;
const CQ_FULL: u32 = 2;

struct Ring {
    sq_tail: AtomicU32,
    parked: AtomicU32,
    /// The device's copy of the bits, and the lock its writers take (`Queue::parked`).
    bits: Mutex<u32>,
}

impl Ring {
    fn set_parked(&self, bit: u32, on: bool) {
        let mut b = self.bits.lock().unwrap();
        if on {
            *b |= bit;
        } else {
            *b &= !bit;
        }
        self.parked.store(*b, Release);
    }
}

/// Runs the three threads; `completion` is how a completion waiting for room updates
/// PARKED. Panics if an entry can be left unseen by a sleeping worker.
fn check(completion: fn(&Ring)) {
    loom::model(move || {
        let ring = Arc::new(Ring {
            sq_tail: AtomicU32::new(0),
            parked: AtomicU32::new(0),
            bits: Mutex::new(0),
        });
        let r = ring.clone();
        let client = thread::spawn(move || {
            r.sq_tail.store(1, Release);
            fence(SeqCst);
            r.parked.load(Relaxed) != 0 // rings the doorbell
        });
        let r = ring.clone();
        let poster = thread::spawn(move || completion(&r));
        // The worker: park, then look once more before sleeping.
        ring.set_parked(IDLE, true);
        fence(SeqCst);
        let saw = ring.sq_tail.load(Acquire) == 1;
        let rang = client.join().unwrap();
        poster.join().unwrap();
        assert!(saw || rang, "an entry was left unseen by a sleeping worker");
    });
}

#[test]
fn parked_bits_under_one_lock_lose_no_doorbell() {
    check(|r| {
        r.set_parked(CQ_FULL, true);
        fence(SeqCst);
        r.set_parked(CQ_FULL, false);
    });
}

#[test]
#[should_panic(expected = "left unseen")]
fn the_old_single_value_parked_lost_doorbells() {
    check(|r| {
        r.parked.store(CQ_FULL, Release);
        fence(SeqCst);
        r.parked.store(0, Release);
    });
}
