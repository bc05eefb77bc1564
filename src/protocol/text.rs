//! Reliable text in a call: ids, acknowledgements, resending and de-duplication.
//!
//! Each sender numbers its texts in a call from 1. The receiver shows a text once and
//! acknowledges every copy; the sender keeps a text until it is acknowledged and sends
//! the unacknowledged ones again after a reconnect. Sans-IO.

use std::collections::{BTreeMap, BTreeSet};

/// Most texts a sender keeps unacknowledged (256 × 4 KiB = 1 MiB worst case). Past it,
/// `TextOutbox::push` refuses: the other side is not reading.
pub const MAX_UNACKED: usize = 256;

/// Texts waiting for acknowledgement, on the sending side.
#[derive(Debug, Default)]
pub struct TextOutbox {
    next_id: u64,
    unacked: BTreeMap<u64, String>,
}

impl TextOutbox {
    pub fn new() -> Self {
        Self { next_id: 1, unacked: BTreeMap::new() }
    }

    /// Stores `body` and gives its id, or `None` when [`MAX_UNACKED`] texts are still
    /// unacknowledged.
    pub fn push(&mut self, body: String) -> Option<u64> {
        if self.unacked.len() >= MAX_UNACKED {
            return None;
        }
        let id = self.next_id.max(1);
        self.next_id = id + 1;
        self.unacked.insert(id, body);
        Some(id)
    }

    /// The other side showed `id`. Returns whether it was outstanding (false for duplicates).
    pub fn handle_ack(&mut self, id: u64) -> bool {
        self.unacked.remove(&id).is_some()
    }

    /// Texts still to be acknowledged, oldest first: send them again after a reconnect.
    pub fn unacked(&self) -> impl Iterator<Item = (u64, &str)> {
        self.unacked.iter().map(|(id, body)| (*id, body.as_str()))
    }

    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }
}

/// Which text ids were shown, on the receiving side.
///
/// Memory is bounded: ids at or below `floor` are all seen; above it, at most
/// [`MAX_UNACKED`] ids are remembered.
#[derive(Debug, Default)]
pub struct TextInbox {
    floor: u64,
    above: BTreeSet<u64>,
}

impl TextInbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `id`; true when it is new and must be shown, false for a duplicate.
    /// Either way the sender must be acknowledged.
    pub fn handle_text(&mut self, id: u64) -> bool {
        if id <= self.floor || !self.above.insert(id) {
            return false;
        }
        while self.above.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
        // A sender keeps at most MAX_UNACKED texts in flight, so a gap this old is never
        // filled: give up on it rather than grow without bound.
        while self.above.len() > MAX_UNACKED {
            if let Some(first) = self.above.pop_first() {
                self.floor = first;
                while self.above.remove(&(self.floor + 1)) {
                    self.floor += 1;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn resend_until_acked() {
        let mut out = TextOutbox::new();
        let a = out.push("a".into()).unwrap();
        let b = out.push("b".into()).unwrap();
        assert_eq!((a, b), (1, 2));
        assert!(out.handle_ack(a));
        assert!(!out.handle_ack(a));
        assert_eq!(out.unacked().collect::<Vec<_>>(), [(2, "b")]);
    }

    #[test]
    fn outbox_is_bounded() {
        let mut out = TextOutbox::new();
        for _ in 0..MAX_UNACKED {
            assert!(out.push("x".into()).is_some());
        }
        assert_eq!(out.push("x".into()), None);
        out.handle_ack(1);
        assert!(out.push("x".into()).is_some());
    }

    proptest! {
        /// Whatever order and however many copies arrive, each id is shown exactly once.
        #[test]
        fn each_text_shown_once(order in proptest::collection::vec(1u64..60, 0..300)) {
            let mut inbox = TextInbox::new();
            let mut shown = BTreeSet::new();
            for id in order {
                let new = inbox.handle_text(id);
                prop_assert_eq!(new, shown.insert(id));
            }
        }
    }
}
