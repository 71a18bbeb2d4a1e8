//! Downloads in flight, per person and in all: a download holds a slot from the moment it is
//! asked for until its body has been sent (or dropped), so nobody can tie up the gateway's
//! memory and disk with parallel exports of large recordings. An export (cast, cast-v2, txt)
//! decodes and verifies the whole recording before it answers; the raw file is streamed.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::{Body, BoxError};
use crate::error::{Error, Result};

/// How many downloads one person may have in flight.
pub const PER_PERSON: usize = 2;
/// How many downloads may be in flight in all.
pub const IN_ALL: usize = 8;

/// The downloads in flight.
#[derive(Debug, Default)]
pub struct Downloads {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    per_person: HashMap<String, usize>,
}

impl Downloads {
    /// Takes a slot for `username`, or refuses with 429 and says why.
    pub fn start(&self, username: &str) -> Result<Slot> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = state.per_person.get(username).copied().unwrap_or(0);
        if mine >= PER_PERSON {
            return Err(Error::TooManyRequests(format!(
                "custody: {username} already has {mine} downloads in progress (at most \
                 {PER_PERSON} at a time); try again when one has finished"
            )));
        }
        if state.total >= IN_ALL {
            return Err(Error::TooManyRequests(format!(
                "custody: the gateway is serving {IN_ALL} downloads already; try again shortly"
            )));
        }
        state.total += 1;
        *state.per_person.entry(username.to_owned()).or_default() += 1;
        Ok(Slot {
            state: self.state.clone(),
            username: username.to_owned(),
        })
    }

    /// How many downloads are in flight.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// One download's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    state: Arc<Mutex<State>>,
    username: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.total = state.total.saturating_sub(1);
        if let Some(n) = state.per_person.get_mut(&self.username) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.per_person.remove(&self.username);
            }
        }
    }
}

/// A body that holds its download's slot until it ends or is dropped.
pub struct Holding {
    inner: Body,
    _slot: Slot,
}

impl Holding {
    /// `inner`, holding `slot`.
    pub fn new(inner: Body, slot: Slot) -> Self {
        Self { inner, _slot: slot }
    }
}

impl HttpBody for Holding {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_per_person_and_in_all() {
        let downloads = Downloads::default();
        let a1 = downloads.start("alice").unwrap();
        let _a2 = downloads.start("alice").unwrap();
        let refused = downloads.start("alice").unwrap_err();
        assert_eq!(refused.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.to_string().contains("at most 2"), "{refused}");
        drop(a1);
        let _a3 = downloads.start("alice").unwrap();
        let others: Vec<Slot> = (0..IN_ALL - 2)
            .map(|i| downloads.start(&format!("p{}", i / 2)).unwrap())
            .collect();
        assert_eq!(downloads.in_flight(), IN_ALL);
        assert!(downloads.start("zoe").is_err());
        drop(others);
        assert_eq!(downloads.in_flight(), 2);
        assert!(downloads.start("zoe").is_ok());
    }
}
