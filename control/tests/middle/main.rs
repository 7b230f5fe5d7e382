//! Control's middle tier: the real `koinos-control` binary against an in-process fake
//! homeserver and fake LiveKit (`koinos_testkit::fake`), each on a free 127.0.0.1 port. Nothing
//! else runs and nothing is skipped: `cargo test -p koinos-control --test middle`. What the
//! dev-stack tests (`tests/stack/`) prove against real Synapse and LiveKit, these prove in
//! seconds wherever the real thing is not the point; each asserts on what the fakes saw control
//! do (requests, state events, LiveKit calls), not only on status codes. Control's log is
//! printed when a test fails. One binary, a module per area.

use std::time::Duration;

use base64::Engine as _;
use koinos_proto::v1::AdmitSessionRequest;
use koinos_testkit::{
    control::{as_gateway, assert_nothing_issued, assert_refused, jwt_claims},
    fake::{
        control::{Control, ControlBuilder, LIVEKIT_API_KEY, Secrets},
        homeserver::{Failing, FakeHomeserver},
        livekit::FakeLiveKit,
    },
    stack::eventually,
};
use livekit_protocol::ParticipantInfo;
use serde_json::{Value, json};
use sha2::Digest as _;

mod calls;
mod fail_closed;
mod gateway_api;
mod removal;
mod rooms;
mod tokens;

/// The fakes, and control started against them.
struct World {
    homeserver: FakeHomeserver,
    livekit: FakeLiveKit,
    secrets: Secrets,
    control: Control,
}

impl World {
    /// Control with its default settings, ready.
    async fn start() -> World {
        World::with(|_| {}).await
    }

    /// Control with settings changed by `configure` (`set("call", "enforce_interval", "60")`),
    /// ready.
    async fn with(configure: impl FnOnce(&mut ControlBuilder)) -> World {
        let secrets = Secrets::generate();
        let homeserver = FakeHomeserver::start().await;
        let livekit = FakeLiveKit::start(LIVEKIT_API_KEY, &secrets.livekit_api_secret).await;
        let mut builder = ControlBuilder::new(
            env!("CARGO_BIN_EXE_koinos-control"),
            &homeserver,
            &livekit,
            &secrets,
        );
        configure(&mut builder);
        let control = builder.start(&homeserver).await;
        World {
            homeserver,
            livekit,
            secrets,
            control,
        }
    }

    /// A case room created by alice with `members` joined, once control has synced it.
    async fn case(&self, members: &[&str]) -> String {
        let room = self.homeserver.case_room("alice", members);
        self.synced().await;
        room
    }

    /// Waits until control has synced everything the homeserver has now.
    async fn synced(&self) {
        assert!(
            self.homeserver.caught_up().await,
            "control did not sync within 10 s"
        );
    }

    /// `user`'s `/token` request for `device` with a fresh OpenID token.
    async fn token(&self, room: &str, user: &str, device: &str) -> (u16, Value) {
        let openid = self.homeserver.issue_openid(user);
        self.control.token(room, &openid, device).await
    }

    /// `user` posts `body` to control's REST `path`, with a fresh OpenID token of theirs.
    async fn post_as(&self, path: &str, user: &str, mut body: Value) -> (u16, Value) {
        body["openid_token"] = self.homeserver.issue_openid(user);
        self.control.post(path, &body).await
    }

    /// `user`'s ticket for `device`; the grant.
    async fn ticket(&self, room: &str, user: &str, device: &str) -> Value {
        let (status, grant) = self.token(room, user, device).await;
        assert_eq!(status, 200, "{user} gets no ticket: {grant}");
        grant
    }

    /// What a gateway does with a ticket: control's `AdmitSession`.
    async fn admit(
        &self,
        ticket: &str,
    ) -> Result<koinos_proto::v1::AdmitSessionResponse, tonic::Status> {
        self.control
            .grpc_client()
            .await
            .admit_session(as_gateway(
                AdmitSessionRequest {
                    ticket: ticket.to_owned(),
                    check_only: false,
                },
                Some(&self.secrets.gateway_credential),
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// `user`'s `device` in the room's call the whole way a browser gets there: a ticket from
    /// control, admitted by control for a gateway, and the LiveKit token control minted for
    /// the connection accepted by (fake) LiveKit.
    async fn in_call(&self, room: &str, user: &str, device: &str) -> ParticipantInfo {
        let grant = self.ticket(room, user, device).await;
        let admission = self
            .admit(grant["jwt"].as_str().unwrap())
            .await
            .unwrap_or_else(|e| panic!("{user} not admitted: {e}"));
        self.livekit
            .connect(&admission.livekit_token)
            .unwrap_or_else(|e| panic!("LiveKit refused control's token for {user}: {e}"))
    }

    /// What every test ends with: control never sent LiveKit a bad token and never asked the
    /// homeserver for something the fake does not know (a new dependency to fake, or a bug).
    #[track_caller]
    fn assert_clean(&self) {
        assert_eq!(
            self.livekit.unauthorized(),
            vec![],
            "LiveKit requests refused for their token"
        );
        assert_eq!(
            self.homeserver.unhandled(),
            Vec::<String>::new(),
            "homeserver requests not faked"
        );
    }
}

/// The call's LiveKit room for a case room, derived here independently of control:
/// `unpaddedBase64(sha256(JSON["<room_id>","m.call#ROOM"]))` (MSC4195, lk-jwt-service).
fn livekit_room_name(room_id: &str) -> String {
    let json = serde_json::to_string(&[room_id, "m.call#ROOM"]).unwrap();
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(json.as_bytes()))
}

/// Polls `check` for up to `seconds`; fails the test (control's log follows) if it never holds.
async fn wait_for<F, Fut>(seconds: u64, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(
        eventually(seconds, check).await,
        "not within {seconds} s: {what}"
    );
}

/// A metric's sample line in control's `/metrics`, parsed (0 when absent).
async fn metric(control: &Control, name_and_labels: &str) -> f64 {
    let (_, text) = control.get("/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// How long a test watches for something that must not happen: longer than one enforcement
/// interval (1 s), so a removal control was going to make would have been made.
const SETTLE: Duration = Duration::from_millis(1500);
