//! Feeds: how a follower (a control client that sent `follow`) gets a stream of items
//! from the loop thread without ever slowing it down.
//!
//! Each follower has a `Feed`: a queue with a budget of bytes, shared by the loop (the
//! producer, through `Subscribers`) and the control thread (the consumer, through its
//! `Follower` handle). An item is JSON text, encoded once by the publisher (only if some
//! follower has room for it) and shared by every follower that takes it. Publishing
//! never blocks and never allocates beyond the budget: an item that does not fit is
//! counted instead, and the follower, once it reads again, gets `Missed(n)` at the place
//! where the items were lost, then what came after. The
//! consumer's thread is woken when a queue goes from empty to not empty, so a follower
//! that keeps up costs one wake-up per burst, not per item.
//!
//! A feed is closed when its follower goes (the `Follower` handle is dropped); the loop
//! then forgets it at its next publish. `end` adds the stream's last entry (the node
//! was destroyed, the supervisor is stopping).
//!
//! The kind of stream is the publisher's business: the loop keeps one `Subscribers` per
//! node for its output; a stream of another kind (the supervisor's events) is another
//! `Subscribers` with items of its own shape.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a follower receives, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    /// One item of the stream: a JSON value, as text.
    Item(Arc<str>),
    /// This many items were left out here: the follower did not read fast enough.
    Missed(u64),
    /// The stream is over, for this reason.
    End(String),
}

/// What an entry costs beside its item's weight, so that a flood of tiny items is
/// bounded too.
pub const ENTRY_COST: usize = 32;

/// One follower's queue.
pub struct Feed {
    queue: Mutex<Queue>,
    budget: usize,
    wake: Box<dyn Fn() + Send + Sync>,
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
    /// The follower is gone: nothing more is queued.
    closed: bool,
    /// `End` was queued: nothing more is queued.
    ended: bool,
}

impl Feed {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock cannot leave the queue inconsistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an item of about `weight` bytes, made by `item` only when there is room for
    /// it; else counts it as missed. False when the follower is gone or the stream has
    /// ended: forget this feed.
    pub fn publish(&self, weight: usize, item: &mut dyn FnMut() -> Arc<str>) -> bool {
        self.publish_batch(&[weight], &mut |_| item())
    }

    /// `publish` for several items at once (item `i` weighs `weights[i]`, made by
    /// `item(i)`), under one lock. Once one does not fit, the rest of the batch is
    /// counted as missed too: a follower that far behind is better served by one count.
    pub fn publish_batch(
        &self,
        weights: &[usize],
        item: &mut dyn FnMut(usize) -> Arc<str>,
    ) -> bool {
        let mut queue = self.lock();
        if queue.closed || queue.ended {
            return false;
        }
        let was_empty = queue.entries.is_empty();
        for (index, weight) in weights.iter().enumerate() {
            let cost = weight.saturating_add(ENTRY_COST);
            if queue.bytes.saturating_add(cost) > self.budget && !queue.entries.is_empty() {
                let missed = (weights.len() - index) as u64;
                match queue.entries.back_mut() {
                    Some((Entry::Missed(n), _)) => *n += missed,
                    _ => queue.entries.push_back((Entry::Missed(missed), 0)),
                }
                break;
            }
            queue.bytes += cost;
            queue.entries.push_back((Entry::Item(item(index)), cost));
        }
        let woken = was_empty && !queue.entries.is_empty();
        drop(queue);
        if woken {
            (self.wake)();
        }
        true
    }

    /// How many bytes of items (entry costs included) would be queued now; 0 when the
    /// follower is gone or the stream has ended.
    pub fn room(&self) -> usize {
        let queue = self.lock();
        if queue.closed || queue.ended {
            0
        } else {
            self.budget.saturating_sub(queue.bytes).max(1)
        }
    }

    /// Counts `count` items as missed without making them (they would not fit). False
    /// when the follower is gone or the stream has ended.
    pub fn miss(&self, count: u64) -> bool {
        let mut queue = self.lock();
        if queue.closed || queue.ended {
            return false;
        }
        let was_empty = queue.entries.is_empty();
        match queue.entries.back_mut() {
            Some((Entry::Missed(n), _)) => *n += count,
            _ => queue.entries.push_back((Entry::Missed(count), 0)),
        }
        drop(queue);
        if was_empty {
            (self.wake)();
        }
        true
    }

    /// Ends the stream: `End(reason)` is its last entry (after what is queued).
    pub fn end(&self, reason: &str) {
        let mut queue = self.lock();
        if queue.closed || queue.ended {
            return;
        }
        queue.ended = true;
        let was_empty = queue.entries.is_empty();
        queue.entries.push_back((Entry::End(reason.to_string()), 0));
        drop(queue);
        if was_empty {
            (self.wake)();
        }
    }

    /// Whether the follower is gone.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// The consumer's handle on a feed (the control thread's, for one connection). Dropping
/// it closes the feed, so the publisher stops feeding a follower that is gone.
pub struct Follower(Arc<Feed>);

impl Follower {
    /// A new feed that holds at most `budget` bytes of items and calls `wake` when it
    /// gets something to read after being empty; this is its consumer's handle.
    pub fn new(budget: usize, wake: impl Fn() + Send + Sync + 'static) -> Follower {
        Follower(Arc::new(Feed {
            queue: Mutex::new(Queue::default()),
            budget,
            wake: Box::new(wake),
        }))
    }

    /// The feed, for the publisher.
    pub fn feed(&self) -> Arc<Feed> {
        self.0.clone()
    }

    /// Takes entries, oldest first, until about `max_bytes` of items are taken (at least
    /// one entry when any is queued).
    pub fn take(&self, max_bytes: usize, into: &mut Vec<Entry>) {
        let mut queue = self.0.lock();
        let mut taken = 0;
        while let Some((_, cost)) = queue.entries.front() {
            if taken > 0 && taken + cost > max_bytes {
                break;
            }
            taken += cost;
            let Some((entry, cost)) = queue.entries.pop_front() else {
                break;
            };
            queue.bytes -= cost;
            into.push(entry);
        }
    }

    /// Whether the stream has ended and everything was taken.
    pub fn is_over(&self) -> bool {
        let queue = self.0.lock();
        queue.ended && queue.entries.is_empty()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        queue.closed = true;
        queue.entries.clear();
        queue.bytes = 0;
    }
}

/// The feeds of one stream, on the publisher's side.
#[derive(Default)]
pub struct Subscribers {
    feeds: Vec<Arc<Feed>>,
}

impl Subscribers {
    /// Adds a follower (and forgets those that are gone).
    pub fn add(&mut self, feed: Arc<Feed>) {
        self.feeds.retain(|f| !f.is_closed());
        self.feeds.push(feed);
    }

    /// Whether nobody follows.
    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// Gives an item of about `weight` bytes to every follower, made by `make` once if
    /// any has room for it; forgets the followers that are gone.
    pub fn publish(&mut self, weight: usize, make: impl FnOnce() -> String) {
        let mut make = Some(make);
        self.publish_batch(&[weight], |_| make.take().map(|f| f()).unwrap_or_default());
    }

    /// Gives several items to every follower (item `i` weighs `weights[i]`), each made by
    /// `make(i)` at most once, when a follower has room for it; forgets the followers
    /// that are gone.
    pub fn publish_batch(&mut self, weights: &[usize], mut make: impl FnMut(usize) -> String) {
        let mut made: Vec<Option<Arc<str>>> = vec![None; weights.len()];
        let mut item = |i: usize| made[i].get_or_insert_with(|| Arc::from(make(i))).clone();
        self.feeds
            .retain(|feed| feed.publish_batch(weights, &mut item));
    }

    /// The most bytes of items (entry costs included) that some follower would take now:
    /// a publisher need not make items past that many, and can `miss` the rest.
    pub fn room(&self) -> usize {
        self.feeds.iter().map(|f| f.room()).max().unwrap_or(0)
    }

    /// Counts `count` items as missed by every follower; forgets those that are gone.
    pub fn miss(&mut self, count: u64) {
        if count > 0 {
            self.feeds.retain(|feed| feed.miss(count));
        }
    }

    /// Ends the stream for every follower, and forgets them.
    pub fn end(&mut self, reason: &str) {
        for feed in self.feeds.drain(..) {
            feed.end(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn item(n: u64) -> Arc<str> {
        Arc::from(n.to_string())
    }

    fn publish(feed: &Feed, n: u64, weight: usize) -> bool {
        feed.publish(weight, &mut || item(n))
    }

    fn taken(follower: &Follower) -> Vec<Entry> {
        let mut entries = Vec::new();
        follower.take(usize::MAX, &mut entries);
        entries
    }

    #[test]
    fn a_slow_follower_is_told_where_and_how_many_items_it_missed() {
        // Room for 3 entries of weight 68 (+ 32).
        let follower = Follower::new(300, || {});
        let mut subscribers = Subscribers::default();
        subscribers.add(follower.feed());
        for n in 0..10 {
            subscribers.publish(68, || n.to_string());
        }
        assert_eq!(
            taken(&follower),
            [
                Entry::Item(item(0)),
                Entry::Item(item(1)),
                Entry::Item(item(2)),
                Entry::Missed(7)
            ]
        );
        subscribers.publish(68, || "10".into());
        subscribers.end("over");
        subscribers.publish(68, || "11".into());
        assert_eq!(
            taken(&follower),
            [Entry::Item(item(10)), Entry::End("over".into())]
        );
        assert!(follower.is_over());
    }

    #[test]
    fn an_item_larger_than_the_budget_still_reaches_an_empty_queue() {
        let follower = Follower::new(10, || {});
        assert!(publish(&follower.feed(), 1, 1000));
        assert!(publish(&follower.feed(), 2, 1000));
        assert_eq!(taken(&follower), [Entry::Item(item(1)), Entry::Missed(1)]);
    }

    #[test]
    fn the_consumer_is_woken_only_when_the_queue_was_empty() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = wakes.clone();
        let follower = Follower::new(10_000, move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let feed = follower.feed();
        for n in 0..5 {
            publish(&feed, n, 1);
        }
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        let mut some = Vec::new();
        follower.take(40, &mut some);
        assert_eq!(some.len(), 1, "take stops near max_bytes");
        assert_eq!(taken(&follower).len(), 4);
        publish(&feed, 9, 1);
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_item_is_made_once_and_only_when_someone_has_room() {
        let (a, b) = (Follower::new(100, || {}), Follower::new(100, || {}));
        let mut subscribers = Subscribers::default();
        subscribers.add(a.feed());
        subscribers.add(b.feed());
        let mut made = 0;
        for n in 0..4 {
            subscribers.publish(60, || {
                made += 1;
                n.to_string()
            });
        }
        // Each feed takes the first item (an empty queue always does), then is full.
        assert_eq!(made, 1);
        assert_eq!(taken(&a), [Entry::Item(item(0)), Entry::Missed(3)]);
        assert_eq!(taken(&b), [Entry::Item(item(0)), Entry::Missed(3)]);
    }

    #[test]
    fn a_batch_that_does_not_fit_is_counted_from_the_first_item_left_out() {
        let follower = Follower::new(100, || {});
        let mut subscribers = Subscribers::default();
        subscribers.add(follower.feed());
        subscribers.publish_batch(&[10, 10, 100, 1, 1], |i| i.to_string());
        subscribers.publish_batch(&[1, 1], |i| i.to_string());
        assert_eq!(
            taken(&follower),
            [Entry::Item(item(0)), Entry::Item(item(1)), Entry::Missed(5)]
        );
        subscribers.publish_batch(&[1, 1], |i| (i + 7).to_string());
        assert_eq!(
            taken(&follower),
            [Entry::Item(item(7)), Entry::Item(item(8))]
        );
    }

    #[test]
    fn room_tells_how_much_to_make_and_miss_counts_the_rest() {
        let (a, b) = (Follower::new(200, || {}), Follower::new(200, || {}));
        let mut subscribers = Subscribers::default();
        subscribers.add(a.feed());
        subscribers.add(b.feed());
        assert_eq!(subscribers.room(), 200);
        subscribers.publish(100, || "0".into());
        assert_eq!(subscribers.room(), 68);
        subscribers.miss(5);
        drop(b);
        subscribers.miss(2);
        assert_eq!(taken(&a), [Entry::Item(item(0)), Entry::Missed(7)]);
        assert_eq!(subscribers.room(), 200);
    }

    #[test]
    fn a_gone_follower_is_forgotten_and_its_queue_freed() {
        let follower = Follower::new(1000, || {});
        let mut subscribers = Subscribers::default();
        subscribers.add(follower.feed());
        subscribers.publish(10, || "1".into());
        drop(follower);
        subscribers.publish(10, || "2".into());
        assert!(subscribers.is_empty());
    }
}
