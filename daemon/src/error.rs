//! crid's error type and its one mapping to gRPC status codes.

use thiserror::Error;

/// Everything a CRI call can fail with.
#[derive(Debug, Error)]
pub enum Error {
    /// The RPC is not implemented by this build.
    #[error("crid does not implement {0} yet")]
    Unimplemented(&'static str),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The object already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is not in a state that allows the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The call ran out of time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A bounded resource ran out (a container event subscriber fell behind).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The registry refused the credentials (or their absence).
    #[error("{0}")]
    Unauthenticated(String),
    /// containerd could not be reached or failed.
    #[error("containerd: {0}")]
    Containerd(#[from] ContainerdError),
    /// Anything else that went wrong inside crid.
    #[error("{0}")]
    Internal(String),
}

/// A failed call to containerd, keeping containerd's own code.
#[derive(Debug, Error)]
#[error("{op}: {status}")]
pub struct ContainerdError {
    /// What crid asked for (e.g. "version").
    pub op: &'static str,
    /// containerd's answer.
    pub status: tonic::Status,
}

impl From<crid_common::ids::IdError> for Error {
    fn from(e: crid_common::ids::IdError) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

impl From<crid_common::ids::PrefixError> for Error {
    fn from(e: crid_common::ids::PrefixError) -> Self {
        // An empty or ambiguous id is the caller's to fix; never "not
        // found" (which stop/remove would answer with success).
        Error::InvalidArgument(e.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let code = match &e {
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            // containerd's NotFound/AlreadyExists/etc. keep their meaning for
            // the kubelet; transport failures become Unavailable.
            Error::Containerd(c) => match c.status.code() {
                Code::Ok | Code::Unknown => Code::Internal,
                other => other,
            },
            Error::Internal(_) => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

/// Result of crid's domain calls.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn codes_map_once() {
        let cases = [
            (Error::Unimplemented("RunPodSandbox"), Code::Unimplemented),
            (Error::InvalidArgument("x".into()), Code::InvalidArgument),
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists),
            (
                Error::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (Error::DeadlineExceeded("x".into()), Code::DeadlineExceeded),
            (Error::Internal("x".into()), Code::Internal),
            (Error::Unauthenticated("x".into()), Code::Unauthenticated),
            (
                Error::ResourceExhausted("x".into()),
                Code::ResourceExhausted,
            ),
            (
                Error::Containerd(ContainerdError {
                    op: "get",
                    status: tonic::Status::not_found("gone"),
                }),
                Code::NotFound,
            ),
            (
                Error::Containerd(ContainerdError {
                    op: "get",
                    status: tonic::Status::unknown("?"),
                }),
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(tonic::Status::from(err).code(), code);
        }
    }

    #[test]
    fn an_ambiguous_id_is_invalid_argument() {
        let e = crid_common::ids::PrefixError::Ambiguous {
            what: "container id",
            prefix: "ab".into(),
        };
        let s = tonic::Status::from(Error::from(e));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("\"ab\""), "{s:?}");
    }

    #[test]
    fn unimplemented_names_the_rpc() {
        let s = tonic::Status::from(Error::Unimplemented("ExecSync"));
        assert!(s.message().contains("ExecSync"));
    }
}
