//! In-process fakes of what control depends on, for running the real `koinos-control` binary
//! with nothing else running: a Matrix homeserver ([`homeserver`]) and LiveKit's RoomService
//! ([`livekit`]), each an axum server on a free `127.0.0.1` port, and control itself started
//! against them ([`control`]).
//!
//! Every fake keeps its state behind one `std::sync::Mutex`, never held across an `.await`:
//! request handlers and the test's own set-up and inspection methods take it for a few
//! statements each, so the test sees exactly what control asked for, in order. Each fake can be
//! stopped ([`Server::stop`]): its listener and every open connection are dropped at once, as a
//! crashed process's would be.

pub mod control;
pub mod homeserver;
pub mod livekit;

use std::net::SocketAddr;

use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::{net::TcpListener, task::JoinSet};

/// A free port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

/// An axum router served on a port of its own. The accept loop owns every connection it
/// accepted (a `JoinSet`), so stopping it closes them all, not only the listener: control's
/// pooled keep-alive connections must fail too, or a "stopped" fake would still answer them.
pub struct Server {
    pub addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
    router: axum::Router,
}

impl Server {
    pub async fn start(router: axum::Router) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let mut server = Server {
            addr,
            task: None,
            router,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: TcpListener) {
        let router = self.router.clone();
        self.task = Some(tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let service = TowerToHyperService::new(router.clone());
                        connections.spawn(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    // Reap finished connections so the set does not grow for the whole test.
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        }));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listener and every connection: the port refuses from now on.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same port (after [`Server::stop`]).
    pub async fn restart(&mut self) {
        self.stop();
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => return self.serve(listener),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("cannot listen on {} again: {last:?}", self.addr);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
