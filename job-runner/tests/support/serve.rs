//! The real `fruitpipe serve` on a loopback port, and a plain HTTP/1.1 client to talk to it
//! byte for byte (so that tests can send what a browser, curl or an attacker would).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `fruitpipe serve` child process, killed when dropped.
pub struct Served {
    child: Child,
    /// `127.0.0.1:PORT`
    pub address: String,
    /// What it wrote on stderr after the line that gave its address.
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Starts `command` (a `fruitpipe serve ...` without `--listen`) on a free port and waits
    /// for the line that says where it listens.
    pub fn start(mut command: Command) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fruitpipe serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let address = loop {
            let mut line = String::new();
            if lines.read_line(&mut line).unwrap() == 0 {
                panic!("fruitpipe serve stopped before it listened:\n{seen}");
            }
            seen.push_str(&line);
            if let Some(rest) = line
                .trim()
                .strip_prefix("fruitpipe serve: listening on http://")
            {
                break rest.to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(sink).unwrap();
            let _ = std::io::copy(&mut lines, &mut file);
        });
        Served {
            child,
            address,
            log,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        for _ in 0..600 {
            if get(&self.address, "/readyz").status == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("fruitpipe serve was not ready within 60 s:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to end by itself (it should, e.g. after a failed load).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn get(address: &str, target: &str) -> Response {
    exchange(
        address,
        format!("GET {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// POSTs `body` with these extra header lines (each ending in \r\n) and its Content-Length.
pub fn post(address: &str, target: &str, headers: &str, body: &[u8]) -> Response {
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    exchange(address, &request)
}

/// A multipart/form-data body with one file field; returns (header line, body).
pub fn form(field: &str, file_name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "fruitpipe-test-boundary-7d3f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nfrom a test\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("Content-Type: multipart/form-data; boundary={boundary}\r\n"),
        body,
    )
}

/// Sends raw request bytes, reads the whole answer (the server closes the connection).
pub fn exchange(address: &str, request: &[u8]) -> Response {
    let mut stream = TcpStream::connect(address).expect("connect to fruitpipe serve");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    // The server may answer (413) and close before it has read all of a large body.
    let _ = stream.write_all(request);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(key, value)| {
        key.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest = &rest[line_end + 4 + size..];
    }
}

/// `path` percent-encoded for a query string.
pub fn encode_query(path: &str) -> String {
    path.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A pipeline output over the shipped Training photos of `classes`, so that their Test
/// photos are new to it.
pub fn training_index(dir: &Path, classes: &[&str]) -> PathBuf {
    let input = dir.join("in");
    super::copy_sample(&input, classes, usize::MAX);
    let output = dir.join("out");
    let result = super::run(
        super::fruitpipe()
            .args([
                "run",
                "--size",
                "100",
                "--components",
                "16",
                "--include",
                "Training/**",
                "--input",
            ])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .arg("--model")
            .arg(super::features_model()),
    );
    assert_eq!(result.status.code(), Some(0), "{}", super::stderr(&result));
    output
}
