//! The TCP transport: a node server that serves regions and mailboxes, and a
//! client transport that reaches nodes through a [`Directory`].

mod client;
mod directory;
mod server;
mod spin;

pub use client::{TcpMemoryPool, TcpTransport};
pub use directory::Directory;
pub use server::TcpNodeServer;
