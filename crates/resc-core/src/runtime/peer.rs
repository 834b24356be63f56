//! Messages between compute components: a channel's state for one peer.

use super::ChannelError;
use crate::ids::{ComputeId, Endpoint};
use crate::transport::{Message, Transport, TransportError};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages that arrived for this instance from a peer other than the one
/// being received from, kept for that peer's channel.
pub(crate) type Stash = Arc<Mutex<HashMap<ComputeId, VecDeque<Message>>>>;

/// A channel's state for one peer compute component.
pub(crate) struct PeerChannel {
    pub(crate) me: Endpoint,
    pub(crate) peer: ComputeId,
    pub(crate) parallelism: u32,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) stash: Stash,
    /// The context's receive timeout, shared so that a later
    /// `set_recv_timeout` applies to channels already open.
    pub(crate) timeout: Arc<Mutex<Duration>>,
}

impl PeerChannel {
    pub(crate) fn send_to(&self, name: &str, instance: u32, payload: &[u8]) -> Result<(), ChannelError> {
        if instance >= self.parallelism {
            return Err(ChannelError::NoSuchInstance {
                component: name.to_owned(),
                instance,
                parallelism: self.parallelism,
            });
        }
        let to = Endpoint { invocation: self.me.invocation, component: self.peer, instance };
        self.transport
            .send(&self.me, &to, payload)
            .map_err(|source| ChannelError::Transport { component: name.to_owned(), source })
    }

    /// The peer instance with this instance's index, modulo its parallelism.
    pub(crate) fn default_instance(&self) -> u32 {
        self.me.instance % self.parallelism.max(1)
    }

    /// Waits for the next message from the peer; no lock is held while waiting.
    pub(crate) fn recv(&self, name: &str) -> Result<Message, ChannelError> {
        if let Some(message) = self.stash.lock().get_mut(&self.peer).and_then(VecDeque::pop_front) {
            return Ok(message);
        }
        let timeout = *self.timeout.lock();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.transport.recv(&self.me, left) {
                Ok(m) => m,
                Err(TransportError::Timeout(_)) => {
                    return Err(ChannelError::Timeout {
                        component: name.to_owned(),
                        timeout_ms: timeout.as_millis() as u64,
                    })
                }
                Err(source) => return Err(ChannelError::Transport { component: name.to_owned(), source }),
            };
            if message.from.component == self.peer {
                return Ok(message);
            }
            self.stash.lock().entry(message.from.component).or_default().push_back(message);
        }
    }
}
