//! Following control's revocations: a practitioner removed from a case room loses their
//! signalling session here at once, and cannot come back with the LiveKit token they still hold
//! (it stays valid until it expires; LiveKit alone would let a reconnect in).
//!
//! Concurrency model: one task ([`Registry::run`]) owns the table of open sessions and of recent
//! revocations. Sessions register when they start (and are refused if a revocation already
//! covers their token), and deregister when they end; the subscriber task
//! ([`follow_control`]) feeds it revocations from control's `WatchRevocations` stream (with the
//! gateway credential). A session is registered only once LiveKit has accepted its token; before
//! that, [`Registry::is_revoked`] may only refuse it. A
//! revoked session is told through its own channel and ends itself (see `relay.rs`), so the
//! registry never touches a socket. If control cannot be reached the gateway keeps relaying:
//! control's own LiveKit removal does not depend on it.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use koinos_proto::v1::WatchRevocationsRequest;
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
    Check {
        key: SessionKey,
        answer: oneshot::Sender<bool>,
    },
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

    /// Whether a revocation covers this token, without registering anything (for claims LiveKit
    /// has not checked yet: the answer may only be used to refuse).
    pub async fn is_revoked(&self, key: SessionKey) -> bool {
        let (answer, rx) = oneshot::channel();
        if self.commands.send(Command::Check { key, answer }).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
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
            Command::Check { key, answer } => {
                let _ = answer.send(revoked.iter().any(|r| r.covers(&key)));
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
    credential: crate::control::Credential,
    registry: Registry,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match subscribe_once(&control_url, &credential, &registry, &metrics).await {
            Ok(()) => warn!("control ended the revocation stream; resubscribing"),
            Err(e) => warn!(error = %e, retry_in = ?backoff, "revocation stream failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn subscribe_once(
    control_url: &str,
    credential: &crate::control::Credential,
    registry: &Registry,
    metrics: &crate::metrics::Metrics,
) -> anyhow::Result<()> {
    // Its own connection, without the per-request timeout of the RoomService client: the
    // stream lives as long as control does.
    let mut client = crate::control::client(control_url, credential.clone(), None)?;
    let mut stream = client
        .watch_revocations(WatchRevocationsRequest {})
        .await?
        .into_inner();
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
    async fn a_check_registers_nothing() {
        let registry = Registry::start(Duration::from_secs(3600));
        registry.revoke(Revocation {
            livekit_room: "R".into(),
            matrix_user: Some("@bob:l".into()),
            revoked_at_ms: 200_000,
        });
        assert!(registry.is_revoked(key("R", "@bob:l", 150)).await);
        assert!(!registry.is_revoked(key("R", "@bob:l", 201)).await);
        assert!(!registry.is_revoked(key("R", "@carol:l", 150)).await);
        assert_eq!(registry.stats().await, (0, 0));
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
