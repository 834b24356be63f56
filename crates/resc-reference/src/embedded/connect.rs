//! Connection set-up off the critical path: a long-lived thread opens a new
//! compute instance's connections from its placement answer while the
//! sandbox loads the instance's code.
//!
//! The thread is started with the platform, so a set-up costs a wake-up of
//! a waiting thread rather than the start of a new one (250–500 µs on an
//! idle virtual CPU here, longer than loading a code piece).

use resc_core::ids::NodeId;
use resc_rdma::tcp::TcpTransport;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When a set-up began and ended, relative to the placement, and how many
/// connections it opened.
pub(crate) type ConnectTiming = (Duration, Duration, usize);

struct ConnectJob {
    transport: Arc<TcpTransport>,
    nodes: Vec<NodeId>,
    placed: Instant,
    done: crossbeam_channel::Sender<ConnectTiming>,
}

/// The platform's connection thread; it ends when the connector is dropped.
pub(crate) struct Connector {
    jobs: crossbeam_channel::Sender<ConnectJob>,
}

impl Connector {
    /// Starts the thread.
    pub(crate) fn start() -> std::io::Result<Connector> {
        let (jobs, queue) = crossbeam_channel::unbounded::<ConnectJob>();
        std::thread::Builder::new().name("resc-connect".into()).spawn(move || {
            for job in queue {
                let begin = job.placed.elapsed();
                let connected = job.nodes.iter().filter(|&&node| job.transport.preconnect(node).is_ok()).count();
                let _ = job.done.send((begin, job.placed.elapsed(), connected));
            }
        })?;
        Ok(Connector { jobs })
    }

    /// Opens `transport`'s connections to `nodes`; the answer says when.
    /// `None` when there is nothing to connect or the thread is gone (the
    /// first operations then connect on demand).
    pub(crate) fn connect(
        &self,
        transport: Arc<TcpTransport>,
        nodes: Vec<NodeId>,
        placed: Instant,
    ) -> Option<crossbeam_channel::Receiver<ConnectTiming>> {
        if nodes.is_empty() {
            return None;
        }
        let (done, timing) = crossbeam_channel::bounded(1);
        self.jobs.send(ConnectJob { transport, nodes, placed, done }).ok()?;
        Some(timing)
    }
}
