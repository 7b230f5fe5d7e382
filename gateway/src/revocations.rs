//! Following control's revocations: a practitioner removed from a case room loses their
//! signalling session here at once, and cannot come back with the LiveKit token they still hold
//! (it stays valid until it expires; LiveKit alone would let a reconnect in).
//!
//! Concurrency model: one task ([`Registry::run`]) owns the table of open sessions and of recent
//! revocations. Sessions register when they start (and are refused if a revocation already
//! covers their token), and deregister when they end; the subscriber task
//! ([`follow_control`]) feeds it revocations from control's `WatchRevocations` stream. A
//! revoked session is told through its own channel and ends itself (see `relay.rs`), so the
//! registry never touches a socket. If control cannot be reached the gateway keeps relaying:
//! control's own LiveKit removal does not depend on it.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use koinos_proto::v1::{WatchRevocationsRequest, control_service_client::ControlServiceClient};
use livekit_api::access_token::{AccessToken, VideoGrants};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// The Matrix user a LiveKit participant belongs to (set by control in every token).
pub const MATRIX_USER_ATTRIBUTE: &str = "org.koinos.matrix_user_id";

/// What a session is, for the purpose of revoking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKey {
    pub livekit_room: String,
    /// `None` for tokens control did not issue (they cannot be revoked by user).
    pub matrix_user: Option<String>,
    /// The token's not-before (unix seconds): a revocation after it covers it.
    pub token_nbf: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub livekit_room: String,
    /// `None`: everyone in the room (control lost the case room).
    pub matrix_user: Option<String>,
    pub revoked_at_ms: i64,
}

impl Revocation {
    fn covers(&self, key: &SessionKey) -> bool {
        self.livekit_room == key.livekit_room
            && match &self.matrix_user {
                None => true,
                Some(user) => key.matrix_user.as_deref() == Some(user),
            }
            && key.token_nbf * 1000 <= self.revoked_at_ms
    }
}

enum Command {
    Open {
        key: SessionKey,
        answer: oneshot::Sender<Option<Session>>,
    },
    Close(u64),
    Revoke(Revocation),
    Stats(oneshot::Sender<(usize, usize)>),
}

/// A registered session: ends when `revoked` fires; deregisters on drop.
pub struct Session {
    id: u64,
    pub revoked: oneshot::Receiver<()>,
    registry: mpsc::UnboundedSender<Command>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.registry.send(Command::Close(self.id));
    }
}

#[derive(Clone)]
pub struct Registry {
    commands: mpsc::UnboundedSender<Command>,
}

impl Registry {
    /// Starts the owning task. `memory`: how long a revocation is remembered (at least the
    /// longest token TTL control issues).
    pub fn start(memory: Duration) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(receiver, commands.clone(), memory));
        Self { commands }
    }

    /// Registers a session, or `None` if a revocation covers its token.
    pub async fn open(&self, key: SessionKey) -> Option<Session> {
        let (answer, rx) = oneshot::channel();
        self.commands.send(Command::Open { key, answer }).ok()?;
        rx.await.ok().flatten()
    }

    pub fn revoke(&self, revocation: Revocation) {
        let _ = self.commands.send(Command::Revoke(revocation));
    }

    /// Sessions open now and the LiveKit rooms they are in.
    pub async fn stats(&self) -> (usize, usize) {
        let (answer, rx) = oneshot::channel();
        if self.commands.send(Command::Stats(answer)).is_err() {
            return (0, 0);
        }
        rx.await.unwrap_or((0, 0))
    }
}

async fn run(
    mut commands: mpsc::UnboundedReceiver<Command>,
    myself: mpsc::UnboundedSender<Command>,
    memory: Duration,
) {
    let mut next_id = 0u64;
    let mut open: HashMap<u64, (SessionKey, oneshot::Sender<()>)> = HashMap::new();
    let mut revoked: Vec<Revocation> = Vec::new();
    while let Some(command) = commands.recv().await {
        match command {
            Command::Open { key, answer } => {
                if let Some(r) = revoked.iter().find(|r| r.covers(&key)) {
                    info!(livekit_room = %key.livekit_room, user = ?key.matrix_user, revoked_at_ms = r.revoked_at_ms,
                        "session refused: its token predates a revocation");
                    let _ = answer.send(None);
                    continue;
                }
                next_id += 1;
                let (kill, revoked_rx) = oneshot::channel();
                open.insert(next_id, (key, kill));
                let _ = answer.send(Some(Session {
                    id: next_id,
                    revoked: revoked_rx,
                    registry: myself.clone(),
                }));
            }
            Command::Close(id) => {
                open.remove(&id);
            }
            Command::Stats(answer) => {
                let rooms: std::collections::HashSet<&str> = open
                    .values()
                    .map(|(key, _)| key.livekit_room.as_str())
                    .collect();
                let _ = answer.send((open.len(), rooms.len()));
            }
            Command::Revoke(revocation) => {
                let ids: Vec<u64> = open
                    .iter()
                    .filter(|(_, (key, _))| revocation.covers(key))
                    .map(|(id, _)| *id)
                    .collect();
                for id in &ids {
                    if let Some((_, kill)) = open.remove(id) {
                        let _ = kill.send(());
                    }
                }
                info!(livekit_room = %revocation.livekit_room, user = ?revocation.matrix_user,
                    sessions = ids.len(), "revocation applied");
                let horizon = now_ms() - memory.as_millis() as i64;
                revoked.retain(|r| r.revoked_at_ms >= horizon);
                revoked.push(revocation);
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Subscribes to control's `WatchRevocations` for as long as the process runs, resubscribing
/// with backoff after any error (control restarting, a lagging stream).
pub async fn follow_control(
    control_url: String,
    api_key: String,
    api_secret: String,
    registry: Registry,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match subscribe_once(&control_url, &api_key, &api_secret, &registry, &metrics).await {
            Ok(()) => warn!("control ended the revocation stream; resubscribing"),
            Err(e) => warn!(error = %e, retry_in = ?backoff, "revocation stream failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn subscribe_once(
    control_url: &str,
    api_key: &str,
    api_secret: &str,
    registry: &Registry,
    metrics: &crate::metrics::Metrics,
) -> anyhow::Result<()> {
    // Proof that this is a gateway: a short-lived LiveKit admin token (control checks it with
    // the same API secret).
    let token = AccessToken::with_api_key(api_key, api_secret)
        .with_identity("koinos-gateway")
        .with_ttl(Duration::from_secs(300))
        .with_grants(VideoGrants {
            room_admin: true,
            ..Default::default()
        })
        .to_jwt()?;
    let mut client = ControlServiceClient::connect(control_url.to_owned()).await?;
    let mut request = tonic::Request::new(WatchRevocationsRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut stream = client.watch_revocations(request).await?.into_inner();
    info!(%control_url, "following control's revocations");
    while let Some(revocation) = stream.message().await? {
        metrics.revocation();
        registry.revoke(Revocation {
            livekit_room: revocation.livekit_room,
            matrix_user: (!revocation.whole_room).then_some(revocation.user_id),
            revoked_at_ms: revocation.revoked_at_ms,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(room: &str, user: &str, nbf: i64) -> SessionKey {
        SessionKey {
            livekit_room: room.into(),
            matrix_user: Some(user.into()),
            token_nbf: nbf,
        }
    }

    #[tokio::test]
    async fn a_revocation_ends_the_users_sessions_in_that_room_only() {
        let registry = Registry::start(Duration::from_secs(3600));
        let mut bob = registry.open(key("R", "@bob:l", 100)).await.unwrap();
        let mut bob_elsewhere = registry.open(key("S", "@bob:l", 100)).await.unwrap();
        let mut carol = registry.open(key("R", "@carol:l", 100)).await.unwrap();
        registry.revoke(Revocation {
            livekit_room: "R".into(),
            matrix_user: Some("@bob:l".into()),
            revoked_at_ms: 200_000,
        });
        (&mut bob.revoked).await.unwrap();
        // Give the registry a moment; the others must still be open.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(bob_elsewhere.revoked.try_recv().is_err());
        assert!(carol.revoked.try_recv().is_err());
    }

    #[tokio::test]
    async fn an_old_token_cannot_reopen_but_a_new_one_can() {
        let registry = Registry::start(Duration::from_secs(3600));
        registry.revoke(Revocation {
            livekit_room: "R".into(),
            matrix_user: Some("@bob:l".into()),
            revoked_at_ms: 200_000,
        });
        assert!(registry.open(key("R", "@bob:l", 150)).await.is_none());
        assert!(registry.open(key("R", "@bob:l", 200)).await.is_none());
        // Re-admitted by control later: a token minted after the revocation is fine.
        assert!(registry.open(key("R", "@bob:l", 201)).await.is_some());
        assert!(registry.open(key("R", "@carol:l", 150)).await.is_some());
    }

    #[tokio::test]
    async fn stats_count_sessions_and_rooms() {
        let registry = Registry::start(Duration::from_secs(3600));
        let _a = registry.open(key("R", "@bob:l", 100)).await.unwrap();
        let _b = registry.open(key("R", "@carol:l", 100)).await.unwrap();
        let c = registry.open(key("S", "@dave:l", 100)).await.unwrap();
        assert_eq!(registry.stats().await, (3, 2));
        drop(c);
        assert_eq!(registry.stats().await, (2, 1));
    }

    #[tokio::test]
    async fn a_whole_room_revocation_ends_everyone() {
        let registry = Registry::start(Duration::from_secs(3600));
        let mut bob = registry.open(key("R", "@bob:l", 100)).await.unwrap();
        let mut carol = registry.open(key("R", "@carol:l", 100)).await.unwrap();
        registry.revoke(Revocation {
            livekit_room: "R".into(),
            matrix_user: None,
            revoked_at_ms: 200_000,
        });
        (&mut bob.revoked).await.unwrap();
        (&mut carol.revoked).await.unwrap();
    }
}
