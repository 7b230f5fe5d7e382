//! What control and the gateway share about serving connections, so that a few hundred sockets
//! or a flood of forged requests cannot exhaust either process:
//!
//! - [`serve`]: the accept loop both binaries run (HTTP/1, HTTP/2 and WebSocket upgrades) with a
//!   connection limit overall and per client address, a deadline for a request's head and body,
//!   and an idle timeout for connections with no request in flight ([`ServeLimits`]);
//! - [`AddressLimiter`]: a token bucket per client address (IPv6 by /64), for work that costs
//!   something before the caller is authenticated;
//! - [`client_address`]: the caller's address, read from `X-Forwarded-For` only through proxies
//!   the operator trusts.

mod address;
mod serve;

pub use address::{AddressLimiter, Cidr, caller, client_address};
pub use serve::{BodyTimedOut, ConnectionFamilies, ConnectionStats, PeerAddr, ServeLimits, serve};
