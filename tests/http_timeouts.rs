//! Slow clients cannot hold `arbiter serve --http`: the real binary with small
//! timeouts, driven by raw TCP clients that send slowly or stop reading, and
//! by idle sessions. Each test checks that the server cut the client off and
//! still serves others. Tokio timeouts here only detect a hang (generous);
//! nothing asserts how fast the server was.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROTOCOL: &str = "2025-11-25";
/// Longer than any timeout configured below, by far.
const HANG: Duration = Duration::from_secs(60);

fn addr(server: &HttpServer) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Read until the server closes the connection (EOF or reset); what it sent.
async fn read_until_closed(mut read: tokio::net::tcp::OwnedReadHalf) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Send `bytes` one at a time, 100 ms apart, until the server closes.
async fn drip(mut write: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>) {
    for byte in bytes {
        if write.write_all(&[byte]).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn healthy(server: &HttpServer) {
    let (status, body) = server.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
}

async fn sessions_active(base: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("arbiter_mcp_sessions_active "))
        .expect("the sessions gauge")
        .trim()
        .parse()
        .unwrap()
}

async fn until_no_session(base: &str, what: &str) {
    let wait = async {
        while sessions_active(base).await != 0.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(
        tokio::time::timeout(HANG, wait).await.is_ok(),
        "the session stayed open: {what}"
    );
}

#[tokio::test]
async fn a_client_sending_its_headers_slowly_is_cut_off_and_others_are_served() {
    let s = Scratch::new();
    let server = HttpServer::start(&s.ws(), &["--no-auth", "--read-timeout", "1s"]);
    let tcp = TcpStream::connect(addr(&server)).await.unwrap();
    let (read, mut write) = tcp.into_split();
    write
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // Headers that would take 100 s at this pace, and never end.
    let slow = tokio::spawn(drip(write, b"X-Slow: ".repeat(125)));
    let got = tokio::time::timeout(HANG, read_until_closed(read)).await;
    assert!(
        got.is_ok(),
        "a client dripping its headers kept its connection"
    );
    let got = String::from_utf8_lossy(&got.unwrap()).into_owned();
    assert!(!got.contains(" 200 "), "it was never answered: {got}");
    slow.abort();
    healthy(&server).await;
}

#[tokio::test]
async fn a_client_sending_its_body_slowly_is_cut_off_and_others_are_served() {
    let s = Scratch::new();
    let server = HttpServer::start(&s.ws(), &["--no-auth", "--read-timeout", "1s"]);
    let tcp = TcpStream::connect(addr(&server)).await.unwrap();
    let (read, mut write) = tcp.into_split();
    let head = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                Accept: application/json, text/event-stream\r\n\
                Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n";
    write.write_all(head.as_bytes()).await.unwrap();
    // A body that would take 1,000 s at this pace.
    let slow = tokio::spawn(drip(write, vec![b' '; 10_000]));
    let got = tokio::time::timeout(HANG, read_until_closed(read)).await;
    assert!(
        got.is_ok(),
        "a client dripping its body kept its connection"
    );
    let got = String::from_utf8_lossy(&got.unwrap()).into_owned();
    assert!(!got.contains(" 200 "), "the request did not succeed: {got}");
    slow.abort();
    healthy(&server).await;
}

/// A legacy SSE stream on a raw socket with a small receive buffer: the
/// session id from its `endpoint` event, and the socket (never read again).
async fn raw_sse(server: &HttpServer) -> (String, TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr(server).parse().unwrap()).await.unwrap();
    tcp.write_all(b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let id = loop {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "the stream ended: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if let Some(at) = text.find("sessionId=")
            && let Some(len) = text[at + 10..].find(['\r', '\n'])
        {
            break text[at + 10..at + 10 + len].to_string();
        }
    };
    (id, tcp)
}

fn rpc(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn initialize() -> Value {
    rpc(
        0,
        "initialize",
        json!({"protocolVersion": PROTOCOL, "capabilities": {},
               "clientInfo": {"name": "raw", "version": "0"}}),
    )
}

#[tokio::test]
async fn an_sse_stream_whose_client_stops_reading_is_closed_and_its_session_ends() {
    let s = Scratch::new();
    // 1,000 lines of 100 bytes: each reply carries about 100 KiB, twice.
    let line = format!("{}\n", "x".repeat(99));
    s.write("big.txt", &line.repeat(1000));
    let server = HttpServer::start(&s.ws(), &["--no-auth", "--write-timeout", "1s"]);
    let (id, _socket) = raw_sse(&server).await;
    assert_eq!(sessions_active(&server.base).await, 1.0);

    // Far more replies than the socket buffers hold (4 MiB at most on the
    // server's side here), none of them read.
    let url = format!("{}/messages?sessionId={id}", server.base);
    let sender = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut messages = vec![
            initialize(),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        ];
        for n in 1..=200 {
            messages.push(rpc(
                n,
                "tools/call",
                json!({"name": "file_read", "arguments": {"target_file": "big.txt"}}),
            ));
        }
        for message in messages {
            let sent = client
                .post(&url)
                .header("content-type", "application/json")
                .body(message.to_string())
                .send()
                .await;
            if sent.is_ok_and(|r| r.status().as_u16() == 404) {
                return; // the session is gone
            }
        }
    });
    until_no_session(&server.base, "its client stopped reading").await;
    sender.abort();
    healthy(&server).await;
    // Others still get sessions.
    let (_other, _) = raw_sse(&server).await;
}

#[tokio::test]
async fn an_idle_sse_session_is_closed_though_keep_alives_flow() {
    let s = Scratch::new();
    let server = HttpServer::start(&s.ws(), &["--no-auth", "--session-idle-timeout", "2s"]);
    let (id, mut tcp) = raw_sse(&server).await;
    let url = format!("{}/messages?sessionId={id}", server.base);
    let client = reqwest::Client::new();
    let status = client
        .post(&url)
        .header("content-type", "application/json")
        .body(initialize().to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 202);

    // This client reads everything, keep-alive comments included; it just
    // sends nothing more.
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    assert!(
        tokio::time::timeout(HANG, read).await.is_ok(),
        "an idle SSE session stayed open"
    );
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("\"result\""), "it was answered: {seen}");
    assert!(
        seen.lines().any(|l| l.starts_with(':')),
        "keep-alive comments went out before it closed: {seen}"
    );
    until_no_session(&server.base, "idle").await;
    let status = client
        .post(&url)
        .header("content-type", "application/json")
        .body(rpc(1, "ping", json!({})).to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404, "the idle session is gone");
    healthy(&server).await;
}

#[tokio::test]
async fn an_idle_streamable_http_session_is_closed_with_its_stream() {
    let s = Scratch::new();
    let server = HttpServer::start(&s.ws(), &["--no-auth", "--session-idle-timeout", "2s"]);
    let client = reqwest::Client::new();
    let post = |session: Option<&str>, body: Value| {
        let mut request = client
            .post(server.mcp())
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", PROTOCOL)
            .body(body.to_string());
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.send()
    };
    let response = post(None, initialize()).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    response.text().await.unwrap();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = post(Some(&session), initialized).await.unwrap();
    assert_eq!(response.status().as_u16(), 202);

    // The session's standalone stream, read to its end.
    let mut stream = client
        .get(server.mcp())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", PROTOCOL)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let mut seen = String::new();
    let read = async {
        while let Ok(Some(chunk)) = stream.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    assert!(
        tokio::time::timeout(HANG, read).await.is_ok(),
        "an idle session's stream stayed open"
    );
    assert!(
        seen.lines().any(|l| l.starts_with(':')),
        "keep-alive comments went out before it closed: {seen}"
    );
    let response = post(Some(&session), rpc(1, "ping", json!({})))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(status, 404, "the idle session is gone: {body}");
    healthy(&server).await;
}
