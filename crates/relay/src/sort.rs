//! Merging several nodes' flow streams into one in time order.
//!
//! Each node sends its flows in its own time order, but the nodes' streams
//! interleave arbitrarily on the way here. A small buffer that always lets
//! the oldest item out restores the order as long as no node lags the
//! others by more than the buffer holds; a quiet period flushes it so a
//! follow stream never sits on flows waiting for more to arrive.

use std::{cmp::Reverse, collections::BinaryHeap, time::Duration};

use tokio::sync::mpsc;

/// Items held before the oldest is let out (Hubble relay's size).
pub const SORT_BUFFER: usize = 100;
/// Time without input after which everything held goes out (Hubble
/// relay's drain interval).
pub const QUIET_DRAIN: Duration = Duration::from_secs(1);

struct Entry<T> {
    key: i128,
    // Arrival order breaks ties, so equal times keep their order.
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.seq) == (other.key, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.key, self.seq).cmp(&(other.key, other.seq))
    }
}

/// A bounded min-heap on a time key.
pub struct SortBuffer<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    capacity: usize,
    seq: u64,
}

impl<T> SortBuffer<T> {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a sort buffer holds at least one item");
        SortBuffer { heap: BinaryHeap::with_capacity(capacity + 1), capacity, seq: 0 }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Adds `item`; once more than `capacity` are held, returns the oldest.
    pub fn push(&mut self, key: i128, item: T) -> Option<T> {
        self.seq += 1;
        self.heap.push(Reverse(Entry { key, seq: self.seq, item }));
        if self.heap.len() > self.capacity {
            self.heap.pop().map(|Reverse(e)| e.item)
        } else {
            None
        }
    }

    /// Everything held, oldest first.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.heap.len());
        while let Some(Reverse(e)) = self.heap.pop() {
            out.push(e.item);
        }
        out
    }
}

/// What the merger is fed.
pub enum Input<T> {
    /// An item ordered by its time key (nanoseconds).
    Timed(i128, T),
    /// An item that goes out at once, ahead of whatever is held (node
    /// status changes: the client should hear them when they happen).
    Now(T),
}

/// Moves items from `input` to `output`, ordered through a buffer of
/// `capacity`, flushed after `quiet` without input and when `input` ends.
/// Returns when the input ends or the output's receiver is gone.
pub async fn merge<T>(
    mut input: mpsc::Receiver<Input<T>>,
    output: mpsc::Sender<T>,
    capacity: usize,
    quiet: Duration,
) {
    let mut buffer = SortBuffer::new(capacity);
    loop {
        let next = if buffer.is_empty() {
            // Nothing to flush: no reason to wake up.
            Some(input.recv().await)
        } else {
            tokio::time::timeout(quiet, input.recv()).await.ok()
        };
        let out: Vec<T> = match next {
            None => buffer.drain(),
            Some(None) => {
                for item in buffer.drain() {
                    if output.send(item).await.is_err() {
                        return;
                    }
                }
                return;
            }
            Some(Some(Input::Now(item))) => vec![item],
            Some(Some(Input::Timed(key, item))) => buffer.push(key, item).into_iter().collect(),
        };
        for item in out {
            if output.send(item).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_out_the_oldest_once_full_and_drains_in_order() {
        let mut b = SortBuffer::new(3);
        assert_eq!(b.push(30, "c"), None);
        assert_eq!(b.push(10, "a"), None);
        assert_eq!(b.push(20, "b"), None);
        assert_eq!(b.len(), 3, "holds up to its capacity");
        assert_eq!(b.push(5, "early"), Some("early"), "older than all held: straight out");
        assert_eq!(b.push(40, "d"), Some("a"));
        assert_eq!(b.len(), 3);
        assert_eq!(b.drain(), vec!["b", "c", "d"]);
        assert!(b.is_empty());
    }

    #[test]
    fn equal_times_keep_arrival_order() {
        let mut b = SortBuffer::new(10);
        for name in ["x", "y", "z"] {
            b.push(7, name);
        }
        assert_eq!(b.drain(), vec!["x", "y", "z"]);
    }

    #[test]
    fn interleaved_streams_come_out_sorted() {
        // Three "nodes" each in order, arriving interleaved out of order.
        let mut b = SortBuffer::new(SORT_BUFFER);
        let mut out = Vec::new();
        for i in 0..300i128 {
            let node = i % 3;
            let key = (i / 3) * 10 + [2, 0, 1][node as usize];
            out.extend(b.push(key, key));
        }
        out.extend(b.drain());
        let mut sorted = out.clone();
        sorted.sort();
        assert_eq!(out, sorted);
        assert_eq!(out.len(), 300);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_input_drains_the_buffer_after_a_second() {
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let merger = tokio::spawn(merge(in_rx, out_tx, SORT_BUFFER, QUIET_DRAIN));
        in_tx.send(Input::Timed(2, "b")).await.unwrap();
        in_tx.send(Input::Timed(1, "a")).await.unwrap();
        in_tx.send(Input::Now("status")).await.unwrap();
        assert_eq!(out_rx.recv().await, Some("status"), "status items skip the buffer");
        let start = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(out_rx.try_recv().is_err(), "held before a second of quiet");
        assert_eq!(out_rx.recv().await, Some("a"));
        assert_eq!(out_rx.recv().await, Some("b"));
        let waited = start.elapsed();
        assert!(waited >= QUIET_DRAIN && waited < QUIET_DRAIN + Duration::from_millis(50), "{waited:?}");
        // The input ending flushes too, without waiting.
        in_tx.send(Input::Timed(9, "z")).await.unwrap();
        drop(in_tx);
        assert_eq!(out_rx.recv().await, Some("z"));
        assert_eq!(out_rx.recv().await, None);
        merger.await.unwrap();
    }
}
