//! A real S3 server (s3s + s3s-fs) on a loopback port, for tests of this workspace.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "fruitpipe-test";
pub const SECRET_KEY: &str = "fruitpipe-test-secret";

/// An S3 server (s3s + s3s-fs) serving `root` over HTTP on a loopback port, for as long as
/// this value lives. Each folder of `root` is a bucket.
pub struct S3Server {
    pub endpoint: String,
    pub root: PathBuf,
    faults: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the server answers instead of serving a request, and when.
#[derive(Clone, Debug, Default)]
struct Fault {
    /// Every `every`-th request gets the fault (0 = never).
    every: usize,
    status: u16,
    code: &'static str,
    /// Downloads (GET) whose path contains the text get that status and code.
    refusals: Vec<(&'static str, u16, &'static str)>,
}

impl S3Server {
    pub fn start(root: &Path) -> S3Server {
        S3Server::start_with_faults(root, 0)
    }

    /// Like `start`, but every `fail_every`-th request gets `503 SlowDown`, as a throttled
    /// S3 does (0 = never).
    pub fn start_with_faults(root: &Path, fail_every: usize) -> S3Server {
        S3Server::start_faulty(
            root,
            Fault {
                every: fail_every,
                status: 503,
                code: "SlowDown",
                ..Fault::default()
            },
        )
    }

    /// Like `start`, but every request gets the S3 error `code` with HTTP `status`, as S3
    /// answers it (`403 AccessDenied`, `429 TooManyRequests`, ...).
    pub fn start_answering(root: &Path, status: u16, code: &'static str) -> S3Server {
        S3Server::start_faulty(
            root,
            Fault {
                every: 1,
                status,
                code,
                ..Fault::default()
            },
        )
    }

    /// Like `start`, but a download (GET) whose path contains one of the texts gets that
    /// S3 error, as S3 answers for one object: `("denied.jpg", 403, "AccessDenied")`.
    pub fn start_refusing(root: &Path, refusals: &[(&'static str, u16, &'static str)]) -> S3Server {
        S3Server::start_faulty(
            root,
            Fault {
                refusals: refusals.to_vec(),
                ..Fault::default()
            },
        )
    }

    fn start_faulty(root: &Path, fault: Fault) -> S3Server {
        let filesystem = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
        let mut builder = S3ServiceBuilder::new(filesystem);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let (shutdown, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let requests = Arc::new(AtomicUsize::new(0));
        let faults = Arc::new(AtomicUsize::new(0));
        let faults_served = Arc::clone(&faults);
        let root_for_rules = root.to_path_buf();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    let socket = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((socket, _)) => socket,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => break,
                    };
                    // As S3 does: without it, small answers wait for the client's delayed
                    // ACK (tens of ms per request on loopback).
                    let _ = socket.set_nodelay(true);
                    let service = service.clone();
                    let requests = Arc::clone(&requests);
                    let faults = Arc::clone(&faults_served);
                    let fault = fault.clone();
                    let root = root_for_rules.clone();
                    let flaky = hyper::service::service_fn(move |request: http::Request<_>| {
                        let service = service.clone();
                        let count = requests.fetch_add(1, Ordering::SeqCst) + 1;
                        let faults = Arc::clone(&faults);
                        let refusal = fault
                            .refusals
                            .iter()
                            .find(|(text, _, _)| {
                                request.method() == http::Method::GET
                                    && request.uri().path().contains(text)
                            })
                            .copied();
                        let every = fault.every;
                        let (status, code) = (fault.status, fault.code);
                        let broken_rule = multipart_rule_broken(&root, &request);
                        async move {
                            if let Some((status, code)) = broken_rule {
                                return Ok(s3_error(status, code));
                            }
                            if let Some((_, status, code)) = refusal {
                                faults.fetch_add(1, Ordering::SeqCst);
                                return Ok(s3_error(status, code));
                            }
                            if every > 0 && count.is_multiple_of(every) {
                                faults.fetch_add(1, Ordering::SeqCst);
                                return Ok(s3_error(status, code));
                            }
                            hyper::service::Service::call(&service, request).await
                        }
                    });
                    let connection = http
                        .serve_connection(TokioIo::new(socket), flaky)
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
            });
        });
        S3Server {
            endpoint: format!("http://{address}"),
            root: root.to_path_buf(),
            faults,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// How many requests were answered with an injected fault.
    pub fn faults(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }

    /// Creates a bucket (a folder of the server's root).
    pub fn bucket(&self, name: &str) -> PathBuf {
        let path = self.root.join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }
}

/// S3's multipart rules that s3s-fs does not apply itself, so that the tests refuse what
/// AWS refuses (docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPart.html,
/// API_UploadPartCopy.html, API_CompleteMultipartUpload.html):
/// - a part number outside 1..=10,000 (UploadPart, UploadPartCopy): `400 InvalidArgument`;
/// - completing an upload with a part under 5 MiB other than the last: `400 EntityTooSmall`.
///   AWS checks the parts the request lists; our clients list every part they sent, so the
///   parts on disk stand for them (s3s-fs keeps them as `.upload_id-ID.part-N` in its root).
fn multipart_rule_broken<B>(
    root: &Path,
    request: &http::Request<B>,
) -> Option<(u16, &'static str)> {
    const MIN_PART: u64 = 5 * 1024 * 1024;
    let query = request.uri().query().unwrap_or_default();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
    };
    let upload = param("uploadId")?;
    if request.method() == http::Method::PUT {
        let number: i64 = param("partNumber")?.parse().unwrap_or(0);
        return (!(1..=10_000).contains(&number)).then_some((400, "InvalidArgument"));
    }
    if request.method() != http::Method::POST {
        return None;
    }
    let prefix = format!(".upload_id-{upload}.part-");
    let mut parts: Vec<(u32, u64)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let number = entry
                .file_name()
                .to_str()?
                .strip_prefix(&prefix)?
                .parse()
                .ok()?;
            Some((number, entry.metadata().ok()?.len()))
        })
        .collect();
    parts.sort();
    let too_small = parts.iter().rev().skip(1).any(|(_, size)| *size < MIN_PART);
    too_small.then_some((400, "EntityTooSmall"))
}

/// An S3 error response, as S3 writes them.
fn s3_error(status: u16, code: &str) -> http::Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
        <Error><Code>{code}</Code><Message>Injected by the test server.</Message></Error>"
    );
    http::Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(s3s::Body::from(body))
        .unwrap()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
