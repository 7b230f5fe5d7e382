//! Black-box tests of control against the running dev stack: real Synapse, real LiveKit, the
//! real gateway, control's own binary under the supervisor (`dev/stack e2e` starts it).
//! On failure the tail of the components' logs is printed. One test binary, a module per area.

use std::time::Duration;

use koinos_testkit::{
    control::{
        as_gateway, assert_nothing_issued, assert_refused, gateway_credential, jwt_claims,
        livekit_admin_token, post_json, post_raw, post_token, post_turn,
        tickets_once_control_is_in,
    },
    matrix::{
        call_membership_event, kick, login, matrix, new_case, openid, put_call_membership,
        urlencode,
    },
    prom::{metric, promtool_check},
    signal::{Session, first_signal, http_status},
    stack::{
        self, CONTROL, CONTROL_GRPC, GATEWAY_HTTP, GATEWAY_WS, HS, LIVEKIT_WS, demo_room, dev_dir,
    },
};
use livekit_protocol::{ParticipantInfo, signal_response};
use prost::Message as _;
use serde_json::{Value, json};

mod calls;
mod gateway_api;
mod ghosts;
mod observability;
mod removal;
mod tokens;
mod turn;

/// A sample of control's metrics.
async fn control_metric(name_and_labels: &str) -> f64 {
    metric(&format!("{CONTROL}/metrics"), name_and_labels).await
}

/// A sample of the first gateway's metrics.
async fn gateway_metric(name_and_labels: &str) -> f64 {
    metric(&format!("{GATEWAY_HTTP}/metrics"), name_and_labels).await
}

/// The gateway admits this ticket into its call.
async fn assert_gateway_admits(ticket: &str) {
    match first_signal(GATEWAY_WS, ticket).await.unwrap() {
        signal_response::Message::Join(_) => {}
        other => panic!("the gateway must admit the ticket, got {other:?}"),
    }
}
