//! Following control's revocations: a practitioner removed from a case room loses their
//! signalling sessions here at once, including one the gateway is still admitting.
//!
//! Nothing is remembered about past revocations: every new connection is admitted by control
//! itself (`AdmitSession`, which checks membership again), so a revoked user's saved ticket is
//! refused there. What this module guarantees is that no session outlives a revocation:
//! - a session is registered (as *pending*) before control is asked to admit it, and a
//!   revocation that arrives while control is deciding refuses it;
//! - a gateway that is not caught up with control — new, restarted, or cut off from the stream —
//!   admits no session ([`Registry::begin`] refuses) until control has answered a subscription
//!   that named every session the gateway holds (control first revokes those whose user is no
//!   longer a member, then says `CaughtUp`).
//!
//! Concurrency model: one task ([`Registry`]'s) owns the table of sessions and the caught-up
//! flag; sessions and the subscriber task ([`follow_control`]) talk to it over a channel. A
//! revoked session is told through its own channel and ends itself (see `relay/`), so the
//! registry never touches a socket. Sessions already open keep relaying while control is away.

use std::{collections::HashMap, time::Duration};

use koinos_proto::v1::{SessionOwner, WatchRevocationsRequest, watch_revocations_response::Event};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Who a session belongs to, for the purpose of revoking it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub livekit_room: String,
    pub matrix_user: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub livekit_room: String,
    /// `None`: everyone in the room (control lost the case room, or the room has no case).
    pub matrix_user: Option<String>,
}

impl Revocation {
    fn covers(&self, key: &SessionKey) -> bool {
        self.livekit_room == key.livekit_room
            && self
                .matrix_user
                .as_ref()
                .is_none_or(|user| *user == key.matrix_user)
    }
}

/// Why a session cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    /// The gateway has not caught up with control's revocations.
    CatchingUp,
    /// A revocation covering it arrived while it was being admitted.
    Revoked,
}

enum Entry {
    Pending { revoked: bool },
    Open { kill: oneshot::Sender<()> },
}

enum Command {
    Begin {
        key: SessionKey,
        answer: oneshot::Sender<Result<u64, NotAdmitted>>,
    },
    Open {
        id: u64,
        answer: oneshot::Sender<Result<oneshot::Receiver<()>, NotAdmitted>>,
    },
    Close(u64),
    Revoke(Revocation),
    CaughtUp(bool),
    Owners(oneshot::Sender<Vec<SessionKey>>),
    Stats(oneshot::Sender<Stats>),
}

/// What the registry holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Open sessions.
    pub sessions: usize,
    /// LiveKit rooms with an open session.
    pub rooms: usize,
    pub caught_up: bool,
}

/// A session being admitted: registered, so that a revocation meanwhile refuses it.
pub struct Pending {
    id: u64,
    registry: mpsc::UnboundedSender<Command>,
    opened: bool,
}

impl Pending {
    /// LiveKit accepted the connection: the session is open, or refused if it was revoked
    /// meanwhile.
    pub async fn open(mut self) -> Result<Session, NotAdmitted> {
        let (answer, rx) = oneshot::channel();
        self.registry
            .send(Command::Open {
                id: self.id,
                answer,
            })
            .map_err(|_| NotAdmitted::CatchingUp)?;
        let revoked = rx.await.map_err(|_| NotAdmitted::CatchingUp)??;
        self.opened = true;
        Ok(Session {
            id: self.id,
            revoked,
            registry: self.registry.clone(),
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.opened {
            let _ = self.registry.send(Command::Close(self.id));
        }
    }
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
    /// Starts the owning task. Not caught up until [`Registry::caught_up`] says so.
    pub fn start() -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(receiver));
        Self { commands }
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (answer, rx) = oneshot::channel();
        self.commands.send(command(answer)).ok()?;
        rx.await.ok()
    }

    /// Registers a session about to be admitted, unless the gateway is not caught up.
    pub async fn begin(&self, key: SessionKey) -> Result<Pending, NotAdmitted> {
        let id = self
            .ask(|answer| Command::Begin { key, answer })
            .await
            .ok_or(NotAdmitted::CatchingUp)??;
        Ok(Pending {
            id,
            registry: self.commands.clone(),
            opened: false,
        })
    }

    pub fn revoke(&self, revocation: Revocation) {
        let _ = self.commands.send(Command::Revoke(revocation));
    }

    /// Whether the gateway is caught up with control (set by [`follow_control`]).
    pub fn caught_up(&self, caught_up: bool) {
        let _ = self.commands.send(Command::CaughtUp(caught_up));
    }

    /// Who the open and pending sessions belong to (what a subscription names).
    pub async fn owners(&self) -> Vec<SessionKey> {
        self.ask(Command::Owners).await.unwrap_or_default()
    }

    pub async fn stats(&self) -> Stats {
        self.ask(Command::Stats).await.unwrap_or_default()
    }
}

async fn run(mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut next_id = 0u64;
    let mut sessions: HashMap<u64, (SessionKey, Entry)> = HashMap::new();
    let mut caught_up = false;
    while let Some(command) = commands.recv().await {
        match command {
            Command::Begin { key, answer } => {
                if !caught_up {
                    let _ = answer.send(Err(NotAdmitted::CatchingUp));
                    continue;
                }
                next_id += 1;
                sessions.insert(next_id, (key, Entry::Pending { revoked: false }));
                let _ = answer.send(Ok(next_id));
            }
            Command::Open { id, answer } => {
                let Some((_, entry)) = sessions.get_mut(&id) else {
                    let _ = answer.send(Err(NotAdmitted::Revoked));
                    continue;
                };
                if let Entry::Pending { revoked: true } = entry {
                    sessions.remove(&id);
                    let _ = answer.send(Err(NotAdmitted::Revoked));
                    continue;
                }
                let (kill, revoked) = oneshot::channel();
                *entry = Entry::Open { kill };
                let _ = answer.send(Ok(revoked));
            }
            Command::Close(id) => {
                sessions.remove(&id);
            }
            Command::CaughtUp(now) => {
                if now != caught_up {
                    info!(caught_up = now, "revocation stream");
                }
                caught_up = now;
            }
            Command::Owners(answer) => {
                let mut owners: Vec<SessionKey> =
                    sessions.values().map(|(key, _)| key.clone()).collect();
                owners.sort_by(|a, b| {
                    (&a.livekit_room, &a.matrix_user).cmp(&(&b.livekit_room, &b.matrix_user))
                });
                owners.dedup();
                let _ = answer.send(owners);
            }
            Command::Stats(answer) => {
                let open = sessions
                    .values()
                    .filter(|(_, entry)| matches!(entry, Entry::Open { .. }));
                let rooms: std::collections::HashSet<&str> = open
                    .clone()
                    .map(|(key, _)| key.livekit_room.as_str())
                    .collect();
                let _ = answer.send(Stats {
                    sessions: open.count(),
                    rooms: rooms.len(),
                    caught_up,
                });
            }
            Command::Revoke(revocation) => {
                let mut ended = 0;
                let ids: Vec<u64> = sessions
                    .iter()
                    .filter(|(_, (key, _))| revocation.covers(key))
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    match sessions.remove(&id) {
                        Some((_, Entry::Open { kill })) => {
                            let _ = kill.send(());
                            ended += 1;
                        }
                        Some((key, Entry::Pending { .. })) => {
                            // Refused when it tries to open.
                            sessions.insert(id, (key, Entry::Pending { revoked: true }));
                            ended += 1;
                        }
                        None => {}
                    }
                }
                info!(livekit_room = %revocation.livekit_room, user = ?revocation.matrix_user,
                    sessions = ended, "revocation applied");
            }
        }
    }
}

const MAX_RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(1);

/// Subscribes to control's `WatchRevocations` for as long as the process runs, naming the
/// sessions held on every (re)subscription; resubscribes with backoff after any error (control
/// restarting, a lagging stream), and admits nothing while it is not caught up. The backoff
/// stays short (at most a second): a gateway that is not caught up refuses every join, so the
/// time it takes to notice control is back is time practitioners wait, and an attempt costs
/// control one HTTP/2 connection attempt.
pub async fn follow_control(
    client: crate::control::Client,
    registry: Registry,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match subscribe_once(client.clone(), &registry, &metrics).await {
            Ok(()) => warn!("control ended the revocation stream; resubscribing"),
            Err(e) => warn!(error = %e, retry_in = ?backoff, "revocation stream failed"),
        }
        registry.caught_up(false);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_RESUBSCRIBE_BACKOFF);
    }
}

async fn subscribe_once(
    mut client: crate::control::Client,
    registry: &Registry,
    metrics: &crate::metrics::Metrics,
) -> anyhow::Result<()> {
    let open_sessions = registry
        .owners()
        .await
        .into_iter()
        .map(|key| SessionOwner {
            livekit_room: key.livekit_room,
            matrix_user: key.matrix_user,
        })
        .collect();
    let mut stream = client
        .watch_revocations(WatchRevocationsRequest { open_sessions })
        .await?
        .into_inner();
    while let Some(message) = stream.message().await? {
        match message.event {
            Some(Event::Revocation(revocation)) => {
                metrics.revocation();
                registry.revoke(Revocation {
                    livekit_room: revocation.livekit_room,
                    matrix_user: (!revocation.whole_room).then_some(revocation.user_id),
                });
            }
            Some(Event::CaughtUp(_)) => {
                info!("caught up with control's revocations");
                registry.caught_up(true);
            }
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(room: &str, user: &str) -> SessionKey {
        SessionKey {
            livekit_room: room.into(),
            matrix_user: user.into(),
        }
    }

    async fn caught_up() -> Registry {
        let registry = Registry::start();
        registry.caught_up(true);
        registry
    }

    async fn open(registry: &Registry, room: &str, user: &str) -> Session {
        registry
            .begin(key(room, user))
            .await
            .unwrap()
            .open()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn nothing_is_admitted_before_the_gateway_has_caught_up() {
        let registry = Registry::start();
        assert_eq!(
            registry.begin(key("R", "@bob:l")).await.err(),
            Some(NotAdmitted::CatchingUp)
        );
        registry.caught_up(true);
        let session = open(&registry, "R", "@bob:l").await;
        // Cut off from control: open sessions stay, new ones wait.
        registry.caught_up(false);
        assert_eq!(
            registry.begin(key("R", "@carol:l")).await.err(),
            Some(NotAdmitted::CatchingUp)
        );
        assert_eq!(registry.owners().await, vec![key("R", "@bob:l")]);
        drop(session);
        assert!(registry.owners().await.is_empty());
    }

    #[tokio::test]
    async fn a_revocation_ends_the_users_sessions_in_that_room_only() {
        let registry = caught_up().await;
        let mut bob = open(&registry, "R", "@bob:l").await;
        let mut bob_elsewhere = open(&registry, "S", "@bob:l").await;
        let mut carol = open(&registry, "R", "@carol:l").await;
        registry.revoke(Revocation {
            livekit_room: "R".into(),
            matrix_user: Some("@bob:l".into()),
        });
        (&mut bob.revoked).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(bob_elsewhere.revoked.try_recv().is_err());
        assert!(carol.revoked.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_revocation_while_control_admits_refuses_the_session() {
        let registry = caught_up().await;
        let pending = registry.begin(key("R", "@bob:l")).await.unwrap();
        // Control checked membership, then the kick arrived before LiveKit accepted.
        registry.revoke(Revocation {
            livekit_room: "R".into(),
            matrix_user: Some("@bob:l".into()),
        });
        assert_eq!(pending.open().await.err(), Some(NotAdmitted::Revoked));
        // A later admission (control re-checks membership) is not affected by it.
        let _again = open(&registry, "R", "@bob:l").await;
    }

    #[tokio::test]
    async fn a_whole_room_revocation_ends_everyone_and_stats_count_open_sessions() {
        let registry = caught_up().await;
        let mut bob = open(&registry, "R", "@bob:l").await;
        let mut carol = open(&registry, "R", "@carol:l").await;
        let _dave = open(&registry, "S", "@dave:l").await;
        let _pending = registry.begin(key("S", "@erin:l")).await.unwrap();
        assert_eq!(
            registry.stats().await,
            Stats {
                sessions: 3,
                rooms: 2,
                caught_up: true
            }
        );
        registry.revoke(Revocation {
            livekit_room: "R".into(),
            matrix_user: None,
        });
        (&mut bob.revoked).await.unwrap();
        (&mut carol.revoked).await.unwrap();
        assert_eq!(registry.stats().await.sessions, 1);
    }
}
