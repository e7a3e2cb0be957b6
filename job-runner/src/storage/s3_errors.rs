//! What a failed S3 request means: an [`Error`] that says what went wrong and what to do.

use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::error::Error;

/// One failed S3 request, as much as a message needs of it.
pub(super) struct Request<'a> {
    pub uri: &'a str,
    /// "download", "upload", "listing", ...; a refusal of a download is about one object.
    pub action: &'a str,
    /// Attempts the SDK made, its retries included.
    pub attempts: u32,
    /// `scheme://host[:port]` the request went (or would have gone) to.
    pub endpoint: String,
    /// Some attempt got as far as sending: the failure is not in building the request.
    pub transmitted: bool,
    pub answered_before: bool,
    pub attempt_timeout: Duration,
}

impl Request<'_> {
    fn what(&self) -> String {
        format!("{} of {}", self.action, self.uri)
    }

    fn transient(&self, detail: String) -> Error {
        Error::Transient {
            what: self.what(),
            detail,
            attempts: Some(self.attempts).filter(|&n| n > 0),
        }
    }

    fn unreachable(&self, cause: String) -> Error {
        Error::Unreachable {
            endpoint: self.endpoint.clone(),
            uri: self.uri.to_string(),
            cause,
            attempts: self.attempts,
            answered_before: self.answered_before,
        }
    }
}

/// Turns an SDK error into one that says what went wrong and what to do, with exit code 2
/// only where a retry certainly cannot help: a missing bucket or object, refused or invalid
/// credentials, a request that cannot be built (a malformed endpoint URL), a bucket in
/// another region. Network faults, timeouts, throttling and 5xx exit 1, once the SDK's own
/// retries have run out.
pub(super) fn s3_error<E>(err: SdkError<E>, request: &Request<'_>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = error_chain(&err);
    tracing::debug!(uri = request.uri, attempts = request.attempts, error = %detail, "S3 request failed");
    match &err {
        SdkError::ServiceError(service) => {
            service_error(service.err(), service.raw().status().as_u16(), request)
        }
        SdkError::TimeoutError(_) => request.unreachable(format!(
            "no answer within {:?} (--s3-timeout)",
            request.attempt_timeout
        )),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            request.unreachable(timeout_cause(&err))
        }
        SdkError::DispatchFailure(failure) if failure.is_io() => {
            request.unreachable(network_cause(&err))
        }
        SdkError::DispatchFailure(_) => {
            if let Some(credentials) = credentials_error(&detail, request.uri) {
                credentials
            } else if !request.transmitted {
                // Nothing was sent: the endpoint could not be resolved or the request not
                // signed, which does not change from one attempt to the next.
                Error::Config(format!(
                    "cannot send the S3 request for {}: {detail}; check --s3-endpoint / AWS_ENDPOINT_URL and --s3-region",
                    request.uri
                ))
            } else {
                // The connection broke in a way hyper does not classify (a response cut
                // short, ...): a network fault.
                request.transient(detail)
            }
        }
        SdkError::ConstructionFailure(_) => Error::Config(format!(
            "cannot build the S3 request for {}: {detail}",
            request.uri
        )),
        // An answer that is not S3's (a proxy's error page, a truncated response) and
        // anything newer: retryable.
        _ => request.transient(detail),
    }
}

/// Maps an error S3 answered with by its code.
fn service_error(
    err: &(impl ProvideErrorMetadata + ?Sized),
    status: u16,
    request: &Request<'_>,
) -> Error {
    let uri = request.uri.to_string();
    let code = err.code().unwrap_or_default();
    let message = err.message().unwrap_or_default();
    let described = match (code.is_empty(), message.is_empty()) {
        (false, true) => code.to_string(),
        (false, false) => format!("{code}: {message}"),
        (true, true) => format!("HTTP {status} without an S3 error code"),
        (true, false) => format!("HTTP {status}: {message}"),
    };
    match code {
        "NoSuchBucket" => Error::NotFound {
            uri,
            hint: " (no such bucket); create the bucket or fix the URI".into(),
        },
        "NoSuchKey" | "NotFound" => Error::NotFound {
            uri,
            hint: String::new(),
        },
        // About this one object when it is downloaded: a bucket policy or ACL on its key,
        // or a KMS key that refuses to decrypt it. Anywhere else: the credentials' rights.
        "AccessDenied" if request.action == DOWNLOAD => Error::ObjectRefused {
            uri,
            reason: format!("access denied ({described})"),
            hint: "check the s3:GetObject permission on it (and kms:Decrypt if it is encrypted with a KMS key)".into(),
            denied: true,
        },
        kms if kms.starts_with("KMS.") && request.action == DOWNLOAD => Error::ObjectRefused {
            uri,
            reason: format!("its KMS key cannot decrypt it ({described})"),
            hint: "check the KMS key and the kms:Decrypt permission".into(),
            denied: true,
        },
        "InvalidObjectState" if request.action == DOWNLOAD => Error::ObjectRefused {
            uri,
            reason: format!("archived, not readable until restored ({described})"),
            hint: "restore it from Glacier or Deep Archive, or move it out of the input".into(),
            denied: false,
        },
        "AccessDenied"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "InvalidToken"
        | "NotSignedUp"
        | "AllAccessDisabled" => Error::AccessDenied {
            uri,
            detail: described,
        },
        "InvalidBucketName" => Error::Config(format!(
            "{uri} names an invalid bucket ({described}); fix the URI"
        )),
        "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => {
            Error::Config(format!(
                "{uri} is not served by this region or endpoint ({described}); set --s3-region (AWS_REGION) to the bucket's region, or fix --s3-endpoint"
            ))
        }
        // Credentials that expired (IRSA, SSO, a profile's role) come fresh in a new run;
        // only a hand-set AWS_SESSION_TOKEN stays expired.
        "ExpiredToken" => request.transient(format!(
            "{described} (the S3 credentials expired; a new run loads fresh ones, except a hand-set AWS_SESSION_TOKEN: renew it)"
        )),
        // Throttling and conflicts that pass, whatever status they come with.
        "SlowDown" | "TooManyRequests" | "RequestTimeout" | "RequestTimeTooSkewed"
        | "OperationAborted" | "InternalError" | "ServiceUnavailable" => {
            request.transient(described)
        }
        // Anything else by its status: 5xx, 408 and 429 pass; another 4xx will not.
        _ if status >= 500 || status == 408 || status == 429 => request.transient(described),
        _ => Error::Config(format!(
            "{} was refused: {described} (HTTP {status}); a retry would be refused the same way: check the URI, the S3 settings (--s3-endpoint, --s3-region, --s3-path-style) and the credentials' permissions",
            request.what()
        )),
    }
}

/// The action of object downloads, whose refusals are about that object.
pub(super) const DOWNLOAD: &str = "download";

/// Failures to load credentials arrive as dispatch failures; only a chain that found no
/// credentials anywhere, or found them misconfigured, is certain. A provider that could not
/// be reached (STS, the instance metadata service) or failed may work on a retry.
fn credentials_error(detail: &str, uri: &str) -> Option<Error> {
    // The Display texts of aws-credential-types' `CredentialsError` variants.
    const NOT_LOADED: &str = "the credential provider was not enabled";
    const MISCONFIGURED: &str = "the credentials provider was not properly configured";
    const OTHERS: [&str; 3] = [
        "an error occurred while loading credentials",
        "credentials provider timed out",
        "unexpected credentials error",
    ];
    let uri = uri.to_string();
    if detail.contains(MISCONFIGURED) {
        Some(Error::AccessDenied {
            uri,
            detail: detail.to_string(),
        })
    } else if detail.contains(NOT_LOADED) && !detail.contains("could not communicate") {
        Some(Error::AccessDenied {
            uri,
            detail: "no usable credentials were found".into(),
        })
    } else if detail.contains(NOT_LOADED) || OTHERS.iter().any(|text| detail.contains(text)) {
        Some(Error::Transient {
            what: format!("loading the S3 credentials for {uri}"),
            detail: detail.to_string(),
            attempts: None,
        })
    } else {
        None
    }
}

/// "connection refused", "connection reset", "DNS lookup failed (...)": the reason an
/// endpoint could not be reached, short, from the innermost errors of the chain.
fn network_cause(err: &(dyn std::error::Error + 'static)) -> String {
    use std::io::ErrorKind;
    let mut dns = false;
    let mut innermost = err.to_string();
    let mut current = Some(err);
    while let Some(error) = current {
        let text = error.to_string();
        dns |= text.contains("dns error");
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            let kind = match io.kind() {
                ErrorKind::ConnectionRefused => Some("connection refused"),
                ErrorKind::ConnectionReset => Some("connection reset"),
                ErrorKind::ConnectionAborted => Some("connection aborted"),
                ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof => Some("connection closed"),
                ErrorKind::TimedOut => Some("timed out"),
                ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                    Some("no route to the endpoint")
                }
                _ => None,
            };
            if let Some(kind) = kind {
                return kind.to_string();
            }
        }
        innermost = text;
        current = error.source();
    }
    if dns {
        format!("DNS lookup failed: {innermost}")
    } else {
        innermost
    }
}

/// "timed out (HTTP connect timeout occurred after 5s)".
fn timeout_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = Some(err);
    while let Some(error) = current {
        let text = error.to_string();
        if text.contains("timeout occurred") {
            return format!("timed out ({text})");
        }
        current = error.source();
    }
    "timed out".into()
}

/// "outer: inner: innermost", without repeating a message a source already gave.
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(error) = current {
        // One line: some errors (a credentials chain's) list their parts on lines of their own.
        let text = error
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod classification {
    use super::*;
    use crate::error::{EXIT_PERMANENT, EXIT_RETRYABLE};
    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::error::BoxError;
    use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_sdk_s3::primitives::SdkBody;
    use std::fmt;

    fn request(transmitted: bool) -> Request<'static> {
        Request {
            uri: "s3://fruit/in/",
            action: "listing",
            attempts: 6,
            endpoint: "http://127.0.0.1:9".into(),
            transmitted,
            answered_before: false,
            attempt_timeout: Duration::from_secs(120),
        }
    }

    fn classify(err: SdkError<GetObjectError>) -> Error {
        s3_error(err, &request(true))
    }

    fn service(status: u16, code: &str) -> SdkError<GetObjectError> {
        let mut metadata = ErrorMetadata::builder().message("from the test");
        if !code.is_empty() {
            metadata = metadata.code(code);
        }
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(GetObjectError::generic(metadata.build()), raw)
    }

    fn answer(status: u16, code: &str) -> Error {
        classify(service(status, code))
    }

    /// The same answer to the download of one object.
    fn answer_to_download(status: u16, code: &str) -> Error {
        let request = Request {
            action: DOWNLOAD,
            ..request(true)
        };
        s3_error(service(status, code), &request)
    }

    /// An error whose `source()` is the next one, as hyper's are.
    #[derive(Debug)]
    struct Wrapped(
        &'static str,
        Option<Box<dyn std::error::Error + Send + Sync>>,
    );

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|err| err as _)
        }
    }

    fn io(kind: std::io::ErrorKind, text: &'static str) -> BoxError {
        Box::new(Wrapped(
            "client error (Connect)",
            Some(Box::new(std::io::Error::new(kind, text))),
        ))
    }

    #[test]
    fn s3_answers_exit_2_only_when_certain() {
        for (status, code) in [
            (404, "NoSuchBucket"),
            (404, "NoSuchKey"),
            (403, "AccessDenied"),
            (403, "InvalidAccessKeyId"),
            (403, "SignatureDoesNotMatch"),
            (400, "InvalidToken"),
            (403, "NotSignedUp"),
            (400, "InvalidBucketName"),
            (301, "PermanentRedirect"),
            (400, "AuthorizationHeaderMalformed"),
        ] {
            let err = answer(status, code);
            assert_eq!(err.exit_code(), EXIT_PERMANENT, "{code}: {err}");
        }
        for (status, code) in [
            (503, "SlowDown"),
            (503, "ServiceUnavailable"),
            (429, "TooManyRequests"),
            (400, "RequestTimeout"),
            (400, "ExpiredToken"),
            (500, "InternalError"),
            (409, "OperationAborted"),
            (502, ""),
            (504, "SomethingNew"),
            (408, ""),
            (429, ""),
        ] {
            let err = answer(status, code);
            assert_eq!(err.exit_code(), EXIT_RETRYABLE, "{status} {code}: {err}");
            assert!(err.to_string().contains("after 6 attempts"), "{err}");
        }
        // An unknown code is retried only when its status says so: another 4xx would be
        // refused the same way on every retry of the operator's too.
        for (status, code) in [(403, ""), (400, "SomethingNew"), (405, "MethodNotAllowed")] {
            let err = answer(status, code);
            assert_eq!(err.exit_code(), EXIT_PERMANENT, "{status} {code}: {err}");
            assert!(
                err.to_string().contains("a retry would be refused"),
                "{err}"
            );
        }
        assert!(answer(403, "").to_string().contains("HTTP 403"));
    }

    #[test]
    fn refusals_of_one_download_are_about_that_object() {
        for (status, code, reason) in [
            (403, "AccessDenied", "access denied"),
            (403, "InvalidObjectState", "archived"),
            (400, "KMS.DisabledException", "KMS key"),
            (404, "NoSuchKey", "missing"),
        ] {
            let err = answer_to_download(status, code);
            let skip = err
                .photo_problem()
                .unwrap_or_else(|| panic!("{code}: {err}"));
            assert!(skip.contains(reason), "{code}: {skip}");
            // Outside a photo (the model, a manifest) it is a mistake to fix, not retry.
            assert_eq!(err.exit_code(), EXIT_PERMANENT, "{code}");
        }
        // Refused credentials are about every object, and a refused listing or upload is
        // about the prefix: never one photo's problem.
        for err in [
            answer_to_download(403, "InvalidAccessKeyId"),
            answer_to_download(403, "SignatureDoesNotMatch"),
            answer(403, "AccessDenied"),
            answer_to_download(503, "SlowDown"),
        ] {
            assert_eq!(err.photo_problem(), None, "{err}");
        }
    }

    #[test]
    fn network_faults_and_timeouts_exit_1_and_say_why() {
        use std::io::ErrorKind;
        let cases = [
            (
                ConnectorError::io(io(ErrorKind::ConnectionRefused, "Connection refused")),
                "connection refused",
            ),
            (
                ConnectorError::io(io(ErrorKind::ConnectionReset, "reset by peer")),
                "connection reset",
            ),
            (
                ConnectorError::io(Box::new(Wrapped(
                    "dns error",
                    Some(Box::new(std::io::Error::other(
                        "failed to lookup address information",
                    ))),
                ))),
                "DNS lookup failed: failed to lookup address information",
            ),
            (
                ConnectorError::timeout(Box::new(Wrapped(
                    "HTTP connect timeout occurred after 5s",
                    None,
                ))),
                "timed out (HTTP connect timeout occurred after 5s)",
            ),
        ];
        for (failure, cause) in cases {
            let err = classify(SdkError::dispatch_failure(failure));
            assert_eq!(err.exit_code(), EXIT_RETRYABLE, "{err}");
            assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains(cause), "expected '{cause}' in: {text}");
            assert!(text.contains("http://127.0.0.1:9"), "{text}");
            assert!(text.contains("(after 6 attempts)"), "{text}");
        }
        let timeout = classify(SdkError::timeout_error(Wrapped("attempt timeout", None)));
        assert_eq!(timeout.exit_code(), EXIT_RETRYABLE);
        assert!(timeout.to_string().contains("no answer within 120s"));

        // A response cut short (hyper's IncompleteMessage), an unparsable answer.
        let cut = SdkError::dispatch_failure(ConnectorError::other(
            Box::new(Wrapped("connection closed before message completed", None)),
            None,
        ));
        assert_eq!(classify(cut).exit_code(), EXIT_RETRYABLE);
        let garbled = SdkError::response_error(
            Wrapped("not XML", None),
            HttpResponse::new(200.try_into().unwrap(), SdkBody::empty()),
        );
        assert_eq!(classify(garbled).exit_code(), EXIT_RETRYABLE);
    }

    #[test]
    fn requests_that_cannot_be_built_or_signed_exit_2() {
        let endpoint = SdkError::<GetObjectError>::dispatch_failure(ConnectorError::other(
            Box::new(Wrapped("Custom endpoint `x` was not a valid URI", None)),
            None,
        ));
        let err = s3_error(endpoint, &request(false));
        assert_eq!(err.exit_code(), EXIT_PERMANENT, "{err}");
    }

    #[test]
    fn only_missing_or_misconfigured_credentials_exit_2() {
        let credentials = |text: &'static str| {
            classify(SdkError::dispatch_failure(ConnectorError::other(
                Box::new(Wrapped(text, None)),
                None,
            )))
        };
        let none =
            credentials("the credential provider was not enabled: no credentials found in chain");
        assert_eq!(none.exit_code(), EXIT_PERMANENT, "{none}");
        assert!(none.to_string().contains("no usable credentials"), "{none}");
        let misconfigured =
            credentials("the credentials provider was not properly configured: bad profile");
        assert_eq!(misconfigured.exit_code(), EXIT_PERMANENT);
        for transient in [
            "the credential provider was not enabled: Ec2InstanceMetadata: could not communicate with IMDS",
            "an error occurred while loading credentials: dispatch failure: io error",
            "credentials provider timed out after 5 seconds",
        ] {
            let err = credentials(transient);
            assert_eq!(err.exit_code(), EXIT_RETRYABLE, "{err}");
            assert!(
                err.to_string().contains("loading the S3 credentials"),
                "{err}"
            );
        }
    }
}
