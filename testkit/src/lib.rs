//! What the black-box tests of control, the gateway and the load tester share: they all drive
//! the running dev stack (`dev/stack e2e` starts it) as its users and its attackers would, and
//! each would otherwise carry its own copy of how to log in, make a case, ask control for a
//! ticket, open a LiveKit signalling session or read a metric. Control's middle tier needs no
//! stack: it runs control's binary against the in-process fakes of [`fake`].
//!
//! - [`stack`]: where the dev stack is, its secrets, the demo case, logs dumped on failure, one
//!   of its components frozen;
//! - [`matrix`]: homeserver accounts, OpenID tokens, case rooms, kicks, call memberships;
//! - [`control`]: control's REST and gRPC as clients and gateways use them;
//! - [`signal`]: LiveKit signalling sessions (through a gateway, or straight to LiveKit with a
//!   token minted for the test), in binary or in LiveKit's JSON;
//! - [`prom`]: scraping and checking Prometheus metrics;
//! - [`process`]: a side gateway of the test's own, started on a free port;
//! - [`door`]: a TCP door that holds a server's frames after its HTTP answer until opened;
//! - [`fake`]: in-process fakes of the homeserver and LiveKit, and the real control binary
//!   started against them (control's middle tier: no dev stack needed).

pub mod control;
pub mod door;
pub mod fake;
pub mod matrix;
pub mod process;
pub mod prom;
pub mod signal;
pub mod stack;

pub use serde_json::{Value, json};
