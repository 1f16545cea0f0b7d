//! `dynamodb://TABLE_PREFIX?region=…&endpoint=http://…&oversize=error|compress&max-wcu=N&parallel=N`
//! and the SDK client made from it.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;
use cutover_connector::{percent_decode, runtime, ConnectorError, ErrorKind};

/// What to do with an item over DynamoDB's 400 KB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Refuse it, naming table, key and size (the default).
    Error,
    /// Compress its largest text and binary attributes with zstd until it fits.
    Compress,
}

/// A DynamoDB target's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamoEndpoint {
    /// Put before every table's name (`shop_` → `shop_orders`); may be empty.
    pub prefix: String,
    pub region: Option<String>,
    /// Another endpoint than AWS's (DynamoDB Local, moto): `http://127.0.0.1:8000`.
    pub endpoint: Option<String>,
    pub oversize: Oversize,
    /// Write capacity units per second the copy may use at most (`None`: no limit).
    pub max_wcu: Option<u32>,
    /// Requests in flight at once within a batch.
    pub parallel: usize,
    /// Static credentials from `<prefix>AWS_ACCESS_KEY_ID`/`…SECRET_ACCESS_KEY`/
    /// `…SESSION_TOKEN`; `None`: the SDK's standard chain (environment, profile, IMDS…).
    pub credentials: Option<(String, String, Option<String>)>,
}

/// The URL's example, for messages.
pub const EXAMPLE: &str = "dynamodb://shop_?region=eu-west-1";

impl DynamoEndpoint {
    /// Parses the URL; `env` reads the side's environment (under its prefix).
    pub fn parse(
        url: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<DynamoEndpoint, ConnectorError> {
        let bad = |m: String| ConnectorError::new(ErrorKind::InvalidInput, m);
        let rest = url.strip_prefix("dynamodb://").ok_or_else(|| {
            bad(format!(
                "a DynamoDB URL starts with dynamodb:// ({EXAMPLE})"
            ))
        })?;
        let (prefix, query) = rest.split_once('?').unwrap_or((rest, ""));
        let prefix = percent_decode(prefix.trim_end_matches('/'), "table prefix")?;
        if let Some(c) = prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(bad(format!(
                "the table prefix {prefix:?} has {c:?}; DynamoDB table names hold only \
                 letters, digits, '_', '-' and '.'"
            )));
        }
        let mut e = DynamoEndpoint {
            prefix,
            region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")),
            endpoint: env("AWS_ENDPOINT_URL_DYNAMODB").or_else(|| env("AWS_ENDPOINT_URL")),
            oversize: Oversize::Error,
            max_wcu: None,
            parallel: 8,
            credentials: match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) => Some((id, secret, env("AWS_SESSION_TOKEN"))),
                _ => None,
            },
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v, k)?;
            match k {
                "region" => e.region = Some(v),
                "endpoint" => e.endpoint = Some(v),
                "oversize" => {
                    e.oversize = match v.as_str() {
                        "error" => Oversize::Error,
                        "compress" => Oversize::Compress,
                        other => {
                            return Err(bad(format!(
                                "oversize={other}: expected error or compress (offload to S3 \
                                 is not built yet)"
                            )))
                        }
                    }
                }
                "max-wcu" => {
                    e.max_wcu = Some(v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                        bad(format!("max-wcu={v}: expected a positive whole number"))
                    })?)
                }
                "parallel" => {
                    e.parallel = v
                        .parse()
                        .ok()
                        .filter(|&n| (1..=64).contains(&n))
                        .ok_or_else(|| {
                            bad(format!(
                                "parallel={v}: expected a whole number from 1 to 64"
                            ))
                        })?
                }
                other => {
                    return Err(bad(format!(
                        "unknown option {other} in a DynamoDB URL (known: region, endpoint, \
                         oversize, max-wcu, parallel)"
                    )))
                }
            }
        }
        Ok(e)
    }

    /// The URL without credentials (it never holds any).
    pub fn redacted(&self) -> String {
        let mut s = format!("dynamodb://{}", self.prefix);
        if let Some(r) = &self.region {
            s.push_str(&format!(" (region {r})"));
        }
        if let Some(ep) = &self.endpoint {
            s.push_str(&format!(" at {ep}"));
        }
        s
    }

    /// A client on the process's runtime: hyper + rustls (ring), the region and endpoint of
    /// the URL, credentials from the side's environment or the standard chain.
    pub fn client(&self) -> Result<aws_sdk_dynamodb::Client, ConnectorError> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(r) = &self.region {
            loader = loader.region(Region::new(r.clone()));
        } else if self.endpoint.is_some() {
            // A local endpoint needs no real region, but the signer needs one.
            loader = loader.region(Region::new("us-east-1"));
        }
        if let Some(ep) = &self.endpoint {
            loader = loader.endpoint_url(ep.clone());
        }
        if let Some((id, secret, token)) = &self.credentials {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.clone(),
                token.clone(),
                None,
                "cutover-environment",
            ));
        }
        let config = runtime::block_on(loader.load());
        if config.region().is_none() {
            return Err(ConnectorError::new(
                ErrorKind::InvalidInput,
                format!(
                    "{}: no AWS region; add ?region=… to the URL or set AWS_REGION",
                    self.redacted()
                ),
            ));
        }
        Ok(aws_sdk_dynamodb::Client::new(&config))
    }
}

/// An SDK error as a connector error: its kind from the service's error code (throttling is
/// `Busy`, retried by the caller), `context` first.
pub fn map<E, R>(context: impl std::fmt::Display, e: SdkError<E, R>) -> ConnectorError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (kind, text) = match &e {
        SdkError::TimeoutError(_) => (ErrorKind::Timeout, "timed out".to_owned()),
        SdkError::DispatchFailure(d) => (
            if d.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Connect
            },
            format!("{:?}", d.as_connector_error()),
        ),
        SdkError::ResponseError(_) => (ErrorKind::Connect, format!("{e}")),
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("");
            let kind = match code {
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "LimitExceededException"
                | "InternalServerError"
                | "ServiceUnavailable"
                | "ResourceInUseException" => ErrorKind::Busy,
                "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "MissingAuthenticationToken"
                | "ExpiredTokenException"
                | "IncompleteSignature" => ErrorKind::Auth,
                "AccessDeniedException" => ErrorKind::Permission,
                "ResourceNotFoundException" => ErrorKind::NotFound,
                "ValidationException" => ErrorKind::InvalidInput,
                "ConditionalCheckFailedException" => ErrorKind::Conflict,
                _ => ErrorKind::Database,
            };
            (
                kind,
                format!("{code}: {}", err.message().unwrap_or("(no message)")),
            )
        }
        other => (ErrorKind::Database, format!("{other:?}")),
    };
    ConnectorError::new(kind, format!("{context}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_their_options() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("id".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".to_owned()),
            _ => None,
        };
        let e = DynamoEndpoint::parse(
            "dynamodb://shop_?region=eu-west-1&endpoint=http%3A%2F%2F127.0.0.1%3A8000&oversize=compress&max-wcu=100&parallel=4",
            &env,
        )
        .unwrap();
        assert_eq!(e.prefix, "shop_");
        assert_eq!(e.region.as_deref(), Some("eu-west-1"));
        assert_eq!(e.endpoint.as_deref(), Some("http://127.0.0.1:8000"));
        assert_eq!(e.oversize, Oversize::Compress);
        assert_eq!(e.max_wcu, Some(100));
        assert_eq!(e.parallel, 4);
        assert_eq!(e.credentials, Some(("id".into(), "secret".into(), None)));
        let none = |_: &str| None;
        let e = DynamoEndpoint::parse("dynamodb://", &none).unwrap();
        assert_eq!((e.prefix.as_str(), e.oversize), ("", Oversize::Error));
        for bad in [
            "dynamodb://a b",
            "dynamodb://x?oversize=offload",
            "dynamodb://x?max-wcu=0",
            "dynamodb://x?nope=1",
            "postgres://x",
        ] {
            assert!(DynamoEndpoint::parse(bad, &none).is_err(), "{bad}");
        }
    }
}
