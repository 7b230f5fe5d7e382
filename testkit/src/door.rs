//! A TCP door in front of a server that the test can hold shut for what the server says after
//! its HTTP answer: a WebSocket upgrade completes, and the frames that follow wait at the door
//! until the test opens it. For putting another fault (a process frozen) exactly between two
//! steps of a protocol.

use std::sync::Arc;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct Door {
    /// `host:port` to give the client instead of the server's.
    pub address: String,
    open: Arc<watch::Sender<bool>>,
}

impl Door {
    /// A door in front of `server` (`host:port`), shut: connections made through it get the
    /// server's HTTP answer and nothing after it until [`Door::open`].
    pub async fn shut(server: &str) -> Door {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (open, _) = watch::channel(false);
        let open = Arc::new(open);
        let server = server.to_owned();
        let gate = open.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (server, opened) = (server.clone(), gate.subscribe());
                tokio::spawn(async move {
                    if let Ok(upstream) = TcpStream::connect(&server).await {
                        pass(client, upstream, opened).await;
                    }
                });
            }
        });
        Door { address, open }
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

async fn pass(client: TcpStream, upstream: TcpStream, mut opened: watch::Receiver<bool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = upstream.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    let mut seen = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let mut answered = false;
    loop {
        let n = match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = &buffer[..n];
        if !answered {
            seen.extend_from_slice(chunk);
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                answered = true;
                let head = seen.len() - n;
                let (answer, rest) = chunk.split_at(end + 4 - head);
                if client_write.write_all(answer).await.is_err() {
                    break;
                }
                chunk = rest;
            } else {
                if client_write.write_all(chunk).await.is_err() {
                    break;
                }
                continue;
            }
        }
        if !*opened.borrow() && opened.wait_for(|open| *open).await.is_err() {
            break;
        }
        if client_write.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = client_write.shutdown().await;
    up.abort();
}
