//! A tiny read-only registry serving built images from memory, with faults
//! injected per blob: stall mid-blob, cut the connection mid-blob, or delay.
//! It counts the requests for each path, so tests can tell what was fetched
//! again. Plain HTTP/1.1 on 127.0.0.1; stopped on drop.

use crate::images::{Blob, BuiltImage};
use crate::BoxError;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What goes wrong when a blob is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Send the headers and half the bytes, then nothing (connection kept open).
    Stall,
    /// Send the headers and half the bytes, then close the connection.
    Cut,
    /// Wait this long before answering.
    Delay(Duration),
    /// Send the blob in ten pieces with this pause before each: slow but moving.
    Trickle(Duration),
}

#[derive(Default)]
struct State {
    /// path → (content type, bytes)
    files: HashMap<String, (String, Vec<u8>)>,
    faults: HashMap<String, Fault>,
    hits: HashMap<String, usize>,
    /// Bearer-token auth: (user, password, token) the `/token` endpoint trades.
    token_auth: Option<(String, String, String)>,
    /// OAuth2 refresh token that a POST to `/token` also trades for the token.
    refresh_token: Option<String>,
    /// The forms POSTed to `/token`, decoded, in arrival order.
    token_posts: Vec<HashMap<String, String>>,
    /// Answer POSTs to `/token` with 404, as token servers without the
    /// OAuth2 POST do; GET then takes the refresh token as basic password.
    token_post_unsupported: bool,
}

/// The running server.
pub struct FakeRegistry {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FakeRegistry {
    /// Starts serving nothing yet.
    pub fn start() -> Result<FakeRegistry, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, sp) = (st.clone(), sp.clone());
                std::thread::spawn(move || serve(conn, st, sp));
            }
        });
        Ok(FakeRegistry { port, state, stop })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Serves `image` as `repo:tag` (and its manifest by digest).
    pub fn add(&self, repo: &str, tag: &str, image: &BuiltImage) {
        let mut s = self.state.lock().unwrap();
        let mut put = |path: String, blob: &Blob| {
            s.files
                .insert(path, (blob.media_type.clone(), blob.data.clone()));
        };
        for b in image.layers.iter().chain(std::iter::once(&image.config)) {
            put(format!("/v2/{repo}/blobs/{}", b.digest), b);
        }
        put(format!("/v2/{repo}/manifests/{tag}"), &image.manifest);
        put(
            format!("/v2/{repo}/manifests/{}", image.manifest.digest),
            &image.manifest,
        );
    }

    /// Injects (or with None clears) a fault for blob `digest` of `repo`.
    pub fn fault(&self, repo: &str, digest: &str, fault: Option<Fault>) {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let mut s = self.state.lock().unwrap();
        match fault {
            Some(f) => s.faults.insert(path, f),
            None => s.faults.remove(&path),
        };
    }

    /// Requires a bearer token on every API request: `/token` hands out
    /// `token` for basic credentials `user`/`password` (the token flow).
    pub fn require_token(&self, user: &str, password: &str, token: &str) {
        self.state.lock().unwrap().token_auth = Some((user.into(), password.into(), token.into()));
    }

    /// With `require_token`: a POST to `/token` with the OAuth2 form
    /// `grant_type=refresh_token&refresh_token=<refresh_token>` also gets the
    /// token (as `access_token`); any other refresh token gets 400 invalid_grant.
    pub fn accept_refresh_token(&self, refresh_token: &str) {
        self.state.lock().unwrap().refresh_token = Some(refresh_token.into());
    }

    /// Acts as a token server without the OAuth2 POST: POST `/token` → 404,
    /// and GET `/token` accepts the refresh token as the password of an
    /// empty user name.
    pub fn token_post_unsupported(&self) {
        self.state.lock().unwrap().token_post_unsupported = true;
    }

    /// The forms POSTed to `/token` so far, decoded.
    pub fn token_posts(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().unwrap().token_posts.clone()
    }

    /// GET requests so far for blob `digest` of `repo`.
    pub fn blob_hits(&self, repo: &str, digest: &str) -> usize {
        let path = format!("/v2/{repo}/blobs/{digest}");
        self.state
            .lock()
            .unwrap()
            .hits
            .get(&path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        // Headers: only Authorization and Content-Length matter.
        let mut authorization = String::new();
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("authorization") {
                    authorization = v.trim().to_string();
                }
                if k.eq_ignore_ascii_case("content-length") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; content_length.min(1 << 20)];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts
            .next()
            .unwrap_or("")
            .split('?')
            .next()
            .unwrap_or("")
            .to_string();
        let (file, fault) = {
            let mut s = state.lock().unwrap();
            *s.hits.entry(path.clone()).or_default() += 1;
            (s.files.get(&path).cloned(), s.faults.get(&path).copied())
        };
        let token_auth = state.lock().unwrap().token_auth.clone();
        if let Some((user, pass, token)) = token_auth {
            use base64::Engine;
            let basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            );
            if path == "/token" && method == "POST" {
                let form = decode_form(&String::from_utf8_lossy(&body));
                let (refresh, unsupported) = {
                    let mut s = state.lock().unwrap();
                    s.token_posts.push(form.clone());
                    (s.refresh_token.clone(), s.token_post_unsupported)
                };
                if unsupported {
                    let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    continue;
                }
                let granted = refresh.is_some()
                    && form.get("grant_type").map(String::as_str) == Some("refresh_token")
                    && form.get("refresh_token") == refresh.as_ref();
                let (status, body) = if granted {
                    (
                        "200 OK",
                        format!("{{\"access_token\":\"{token}\",\"expires_in\":300}}"),
                    )
                } else {
                    (
                        "400 Bad Request",
                        r#"{"error":"invalid_grant"}"#.to_string(),
                    )
                };
                let _ = write!(
                    out,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                continue;
            }
            if path == "/token" {
                let refresh = state.lock().unwrap().refresh_token.clone();
                let by_refresh = refresh.map(|r| {
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(format!(":{r}"))
                    )
                });
                if authorization == basic || by_refresh.as_ref() == Some(&authorization) {
                    let body = format!("{{\"token\":\"{token}\"}}");
                    let _ = write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                } else {
                    let _ =
                        out.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
                }
                continue;
            }
            if authorization != format!("Bearer {token}") {
                let port = out.local_addr().map(|a| a.port()).unwrap_or(0);
                let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}"#;
                let _ = write!(
                    out,
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = out.write_all(body);
                continue;
            }
        }
        if path == "/v2/" || path == "/v2" {
            let _ = out.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}",
            );
            continue;
        }
        let Some((content_type, data)) = file else {
            let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#;
            let _ = write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(body);
            continue;
        };
        if let Some(Fault::Delay(d)) = fault {
            std::thread::sleep(d);
        }
        let digest = crate::images::digest_of(&data);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nDocker-Content-Digest: {digest}\r\n\r\n",
            data.len()
        );
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if method == "HEAD" {
            continue;
        }
        match fault {
            Some(Fault::Stall) | Some(Fault::Cut) => {
                let _ = out.write_all(&data[..data.len() / 2]);
                let _ = out.flush();
                if fault == Some(Fault::Cut) {
                    return;
                }
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            Some(Fault::Trickle(pause)) => {
                for piece in data.chunks(data.len().div_ceil(10).max(1)) {
                    std::thread::sleep(pause);
                    if out.write_all(piece).and_then(|_| out.flush()).is_err() {
                        return;
                    }
                }
            }
            _ => {
                if out.write_all(&data).is_err() {
                    return;
                }
            }
        }
    }
}

/// `application/x-www-form-urlencoded` decoded (`+` is a space, `%XX` a byte).
fn decode_form(body: &str) -> HashMap<String, String> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}
