//! koinos-rtc control plane: decides *who* may be in a case room's call.
//!
//! See `ARCHITECTURE.md` at the repository root for how this crate fits with the gateway,
//! LiveKit and the homeserver. Module map:
//! - [`service`]: the operations (one service layer), independent of transport;
//! - [`admission`]: what gateways ask for each connection (admit, renew the ticket, catch up);
//! - [`ticket`] and [`seats`]: the pure policies behind it (what clients hold instead of LiveKit
//!   tokens; who holds a seat in a call);
//! - [`rest`] and [`grpc`]: the two transports;
//! - [`homeserver`], [`membership`], [`livekit`]: the outbound dependencies, each behind a trait;
//! - [`enforcement`]: removes people from calls when they leave or are removed from the case,
//!   and anyone in a call LiveKit lists who is not a joined member;
//! - [`reaper`]: clears call memberships whose participant has gone (no ghosts without MSC4140);
//! - [`config`] and [`error`]: configuration and the one error type that is the wire format.

pub mod admission;
pub mod config;
pub mod enforcement;
pub mod error;
pub mod grpc;
pub mod homeserver;
pub mod livekit;
pub mod membership;
pub mod metrics;
pub mod ratelimit;
pub mod reaper;
pub mod replay;
pub mod rest;
pub mod seats;
pub mod service;
#[cfg(test)]
pub(crate) mod testing;
pub mod ticket;
pub mod turn;
