use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Echoes the request body's length, or says why it could not read it; `/slow` answers
/// after a second.
async fn echo(request: Request<DeadlineBody>) -> Result<Response<String>, Infallible> {
    let slow = request.uri().path() == "/slow";
    let peer = request.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    let answer = match request.into_body().collect().await {
        Ok(body) => format!("{} bytes from {peer:?}", body.to_bytes().len()),
        Err(e) if e.downcast_ref::<BodyTimedOut>().is_some() => "timed out".into(),
        Err(e) => format!("error {e}"),
    };
    if slow {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(Response::new(answer))
}

async fn start(limits: ServeLimits) -> (SocketAddr, ConnectionStats) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = ConnectionStats::default();
    tokio::spawn(serve(
        listener,
        limits,
        stats.clone(),
        |_| tower::service_fn(echo),
        std::future::pending(),
    ));
    (addr, stats)
}

fn quick() -> ServeLimits {
    ServeLimits {
        max_connections: 8,
        max_connections_per_address: 3,
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        trusted_proxies: vec![],
    }
}

/// Reads until the server closes (true) or `within` passes (false).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

async fn request(addr: SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test]
async fn a_request_is_served_with_its_peer_address() {
    let (addr, stats) = start(quick()).await;
    let answer = request(
        addr,
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc",
    )
    .await;
    assert!(answer.contains("3 bytes from Some(127.0.0.1)"), "{answer}");
    assert_eq!(stats.accepted(), 1);
}

#[tokio::test]
async fn silent_slow_header_and_idle_keep_alive_connections_are_closed() {
    let (addr, stats) = start(quick()).await;
    // Never sends a byte.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Sends half a request head and stops.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Completes a request, then keeps the connection open doing nothing.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    for (name, stream) in [
        ("silent", &mut silent),
        ("slow header", &mut slow),
        ("idle", &mut idle),
    ] {
        assert!(
            closed_within(stream, Duration::from_secs(8)).await,
            "{name} still open"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(stats.open(), 0);
    assert!(stats.idle_closed() >= 1);
}

#[tokio::test]
async fn a_slow_body_fails_with_its_own_error_and_a_slow_answer_is_not_idle() {
    let (addr, _) = start(quick()).await;
    let answer = request(
        addr,
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly a little",
    )
    .await;
    assert!(answer.contains("timed out"), "{answer}");
    // The handler takes a second, as long as the idle timeout: still answered.
    let answer = request(addr, "GET /slow HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_limits_are_closed_at_once() {
    let (addr, stats) = start(quick()).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut fourth, Duration::from_millis(500)).await);
    assert_eq!(stats.refused(), (0, 1));
    // Another address (the whole 127/8 is loopback) still gets in.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = other.connect(addr).await.unwrap();
    other
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = other.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("127.0.0.2"));
    // Closing one frees its place.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = TcpStream::connect(addr).await.unwrap();
    again
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let n = again.read(&mut buf).await.unwrap();
    assert!(n > 0);
}

#[tokio::test]
async fn trusted_proxies_count_only_towards_the_total() {
    let mut limits = quick();
    limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let (addr, stats) = start(limits).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut ninth = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut ninth, Duration::from_millis(500)).await);
    assert_eq!(stats.refused(), (1, 0));
}

#[test]
fn limits_are_checked() {
    assert!(ServeLimits::default().validate("http").is_ok());
    let mut limits = ServeLimits {
        max_connections_per_address: 2000,
        ..ServeLimits::default()
    };
    assert!(
        limits
            .validate("http")
            .unwrap_err()
            .contains("http.max_connections_per_address")
    );
    limits = ServeLimits {
        idle_timeout: Duration::ZERO,
        ..ServeLimits::default()
    };
    assert!(
        limits
            .validate("grpc")
            .unwrap_err()
            .contains("grpc.idle_timeout")
    );
}
