//! A bounded ring of timestamped events with live followers, and the
//! history selection Hubble's `GetAgentEvents` and `GetDebugEvents` share
//! (number, first, follow, since, until): one store for every kind of
//! event that is not a flow.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::sync::broadcast;
use twill_observe_proto::prost_types::Timestamp;

/// Events queued for a follower before it starts losing them.
const FOLLOW_BUFFER: usize = 1024;

/// One stored event and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped<T> {
    pub seq: u64,
    pub time: Timestamp,
    pub event: T,
}

pub struct EventRing<T> {
    inner: Mutex<(VecDeque<Stamped<T>>, u64)>,
    capacity: usize,
    tx: broadcast::Sender<Stamped<T>>,
    /// Events followers missed because they fell behind.
    lagged: AtomicU64,
}

impl<T: Clone> EventRing<T> {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(FOLLOW_BUFFER);
        Self {
            inner: Mutex::new((VecDeque::with_capacity(capacity.min(1024)), 0)),
            capacity: capacity.max(1),
            tx,
            lagged: AtomicU64::new(0),
        }
    }

    /// Stores an event that happened now.
    pub fn push(&self, event: T) {
        self.push_at(now(), event)
    }

    pub fn push_at(&self, time: Timestamp, event: T) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.1 += 1;
        let stamped = Stamped { seq: inner.1, time, event };
        if inner.0.len() == self.capacity {
            inner.0.pop_front();
        }
        inner.0.push_back(stamped.clone());
        // Under the lock, so followers see events in ring order.
        let _ = self.tx.send(stamped);
    }

    /// Every stored event, oldest first, and a receiver for the ones after.
    pub fn snapshot_and_follow(&self) -> (Vec<Stamped<T>>, broadcast::Receiver<Stamped<T>>) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.0.iter().cloned().collect(), self.tx.subscribe())
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events pushed since start.
    pub fn seen(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    pub fn note_lagged(&self, n: u64) {
        self.lagged.fetch_add(n, Ordering::Relaxed);
    }

    /// Events followers lost by falling behind, since start.
    pub fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }
}

pub(crate) fn now() -> Timestamp {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn ts_nanos(t: &Timestamp) -> i128 {
    t.seconds as i128 * 1_000_000_000 + t.nanos as i128
}

/// What a client asked for, in the fields both event requests have.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub number: u64,
    pub first: bool,
    pub follow: bool,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl Window {
    pub fn in_range(&self, time: &Timestamp) -> bool {
        self.since.as_ref().is_none_or(|s| ts_nanos(time) >= ts_nanos(s))
            && self.until.as_ref().is_none_or(|u| ts_nanos(time) <= ts_nanos(u))
    }

    /// The stored events to send before following, oldest first: the
    /// first or last `number` in range (0: all), none for a plain follow.
    pub fn select<T>(&self, history: Vec<Stamped<T>>) -> Vec<Stamped<T>> {
        let matching: Vec<Stamped<T>> = history.into_iter().filter(|e| self.in_range(&e.time)).collect();
        let n = if self.number == 0 { matching.len() } else { (self.number as usize).min(matching.len()) };
        if self.first {
            matching.into_iter().take(n).collect()
        } else if self.number == 0 && self.follow && self.since.is_none() {
            Vec::new()
        } else {
            let skip = matching.len() - n;
            matching.into_iter().skip(skip).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp { seconds, nanos: 0 }
    }

    fn ring_of(times: &[i64]) -> EventRing<i64> {
        let ring = EventRing::new(16);
        for t in times {
            ring.push_at(at(*t), *t);
        }
        ring
    }

    fn picked(w: &Window, ring: &EventRing<i64>) -> Vec<i64> {
        w.select(ring.snapshot_and_follow().0).into_iter().map(|e| e.event).collect()
    }

    #[test]
    fn the_ring_keeps_the_newest_and_followers_get_what_comes_after() {
        let ring = EventRing::new(2);
        ring.push(1);
        let (before, mut live) = ring.snapshot_and_follow();
        assert_eq!(before.len(), 1);
        ring.push(2);
        ring.push(3);
        let (all, _) = ring.snapshot_and_follow();
        assert_eq!(all.iter().map(|e| e.event).collect::<Vec<_>>(), vec![2, 3], "bounded");
        assert_eq!(live.try_recv().unwrap().seq, 2);
        assert_eq!(live.try_recv().unwrap().seq, 3);
        assert_eq!(ring.seen(), 3);
    }

    #[test]
    fn last_first_and_all() {
        let ring = ring_of(&[1, 2, 3, 4]);
        assert_eq!(picked(&Window { number: 2, ..Default::default() }, &ring), vec![3, 4]);
        assert_eq!(picked(&Window { number: 2, first: true, ..Default::default() }, &ring), vec![1, 2]);
        assert_eq!(picked(&Window::default(), &ring), vec![1, 2, 3, 4]);
        assert_eq!(picked(&Window { number: 9, ..Default::default() }, &ring), vec![1, 2, 3, 4]);
    }

    #[test]
    fn plain_follow_sends_no_history_but_since_does() {
        let ring = ring_of(&[1, 2, 3]);
        assert!(picked(&Window { follow: true, ..Default::default() }, &ring).is_empty());
        let since = Window { follow: true, since: Some(at(2)), ..Default::default() };
        assert_eq!(picked(&since, &ring), vec![2, 3]);
    }

    #[test]
    fn since_and_until_bound_the_history() {
        let ring = ring_of(&[1, 2, 3, 4, 5]);
        let w = Window { since: Some(at(2)), until: Some(at(4)), ..Default::default() };
        assert_eq!(picked(&w, &ring), vec![2, 3, 4]);
        let w = Window { number: 1, since: Some(at(2)), until: Some(at(4)), ..Default::default() };
        assert_eq!(picked(&w, &ring), vec![4]);
    }
}
