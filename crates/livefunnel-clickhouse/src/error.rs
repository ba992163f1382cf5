//! Errors of the ClickHouse sink, sorted into "a retry helps" and "a person must act".

use crate::config::ConfigError;

/// A failed ClickHouse operation. [`ClickHouseError::is_retryable`] says whether
/// trying again later can succeed; every other error names its cause and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "clickhouse rejected the credentials for user {user}: check clickhouse.user / clickhouse.password \
         (server said: {detail})"
    )]
    Auth { user: String, detail: String },
    #[error(
        "clickhouse user {user} is not allowed to do this on database {database}: grant it write access \
         (and CREATE for the migrations) or set clickhouse.user to a user that has it (server said: {detail})"
    )]
    AccessDenied { user: String, database: String, detail: String },
    #[error(
        "clickhouse has no such database or table in {database}: the migrations create them at start-up; \
         check clickhouse.database (server said: {detail})"
    )]
    Missing { database: String, detail: String },
    #[error(
        "clickhouse rejected the data or statement (code {code}): the table schema does not match what this \
         livefunnel version writes, e.g. a column dropped or changed by hand: restore it as the migrations \
         define it, or point clickhouse.database at a new database; check clickhouse.database and its \
         schema_migrations table (server said: {detail})"
    )]
    Schema { code: u32, detail: String },
    #[error(
        "table {table}: column {column} has type {found} but livefunnel writes {expected}: change the column \
         by hand (ALTER TABLE ... MODIFY COLUMN) or point clickhouse.database at a new database"
    )]
    ColumnType { table: String, column: String, found: String, expected: String },
    #[error("moving table {table} to its new sort key (contract §5): {detail}")]
    Migration { table: String, detail: String },
    #[error("clickhouse error code {code} ({}): {detail}", if *.retryable { "a retry may help" } else { "a retry will not help" })]
    Server { code: u32, detail: String, retryable: bool },
    #[error("clickhouse answered http {status}: {detail}")]
    Http { status: u16, detail: String },
    #[error("cannot reach clickhouse at {url} (is it running? check clickhouse.url): {detail}")]
    Unreachable { url: String, detail: String },
    #[error("clickhouse did not answer within {timeout_ms} ms (clickhouse.request_timeout)")]
    Timeout { timeout_ms: u64 },
    #[error("gave up after retrying for {elapsed_ms} ms (clickhouse.retry.max_elapsed): {last}")]
    RetriesExhausted { elapsed_ms: u64, last: Box<ClickHouseError> },
    #[error("flush interrupted by shutdown: {rows} rows stay buffered")]
    ShutDown { rows: u64 },
    #[error("unexpected clickhouse response: {0}")]
    Protocol(String),
}

impl ClickHouseError {
    /// Whether the same operation can succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClickHouseError::Server { retryable, .. } => *retryable,
            ClickHouseError::Http { status, .. } => *status >= 500,
            ClickHouseError::Unreachable { .. }
            | ClickHouseError::Timeout { .. }
            | ClickHouseError::RetriesExhausted { .. }
            | ClickHouseError::ShutDown { .. } => true,
            ClickHouseError::Config(_)
            | ClickHouseError::Auth { .. }
            | ClickHouseError::AccessDenied { .. }
            | ClickHouseError::Missing { .. }
            | ClickHouseError::Schema { .. }
            | ClickHouseError::ColumnType { .. }
            | ClickHouseError::Migration { .. }
            | ClickHouseError::Protocol(_) => false,
        }
    }

    /// The ClickHouse error code, when the server sent one.
    pub fn code(&self) -> Option<u32> {
        match self {
            ClickHouseError::Schema { code, .. } | ClickHouseError::Server { code, .. } => Some(*code),
            ClickHouseError::RetriesExhausted { last, .. } => last.code(),
            _ => None,
        }
    }

    /// Classifies a server's error message (`Code: N. DB::Exception: ...`) as the
    /// HTTP client does, for engines reached another way (tests run current
    /// ClickHouse in process).
    pub fn from_server_message(message: &str, user: &str, database: &str) -> ClickHouseError {
        classify_response(message, Context { url: "", user, database, timeout_ms: 0 })
    }
}

/// Who was asking, so an error can name the user, database and URL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub url: &'a str,
    pub user: &'a str,
    pub database: &'a str,
    pub timeout_ms: u64,
}

/// Codes a retry can fix: overload, timeouts, network trouble, replication hiccups.
const RETRYABLE_CODES: &[u32] = &[
    159,  // TIMEOUT_EXCEEDED
    160,  // TOO_SLOW
    201,  // QUOTA_EXPIRED / QUOTA_EXCEEDED
    202,  // TOO_MANY_SIMULTANEOUS_QUERIES
    203,  // NO_FREE_CONNECTION
    209,  // SOCKET_TIMEOUT
    210,  // NETWORK_ERROR
    225,  // NO_ZOOKEEPER
    236,  // ABORTED
    241,  // MEMORY_LIMIT_EXCEEDED
    242,  // TABLE_IS_READ_ONLY (replica lost its keeper session)
    243,  // NOT_ENOUGH_SPACE
    252,  // TOO_MANY_PARTS
    285,  // TOO_FEW_LIVE_REPLICAS
    286,  // UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE
    319,  // UNKNOWN_STATUS_OF_INSERT
    373,  // SESSION_IS_LOCKED
    394,  // QUERY_WAS_CANCELLED
    425,  // SYSTEM_ERROR
    439,  // CANNOT_SCHEDULE_TASK
    473,  // DEADLOCK_AVOIDED
    999,  // KEEPER_EXCEPTION
    1000, // POCO_EXCEPTION (mostly network)
];

/// Bad credentials: UNKNOWN_USER, WRONG_PASSWORD, REQUIRED_PASSWORD,
/// IP_ADDRESS_NOT_ALLOWED, AUTHENTICATION_FAILED.
const AUTH_CODES: &[u32] = &[192, 193, 194, 195, 516];
/// READONLY, DATABASE_ACCESS_DENIED (old servers), ACCESS_DENIED.
const ACCESS_CODES: &[u32] = &[164, 291, 497];
/// UNKNOWN_TABLE, UNKNOWN_DATABASE.
const MISSING_CODES: &[u32] = &[60, 81];
/// Data or statement does not fit the table: parse errors, type mismatches,
/// unknown columns, short reads of RowBinary, syntax errors.
const SCHEMA_CODES: &[u32] = &[6, 8, 16, 26, 27, 32, 33, 38, 41, 47, 53, 62, 69, 70, 72, 117, 349];

/// Maps an error of the `clickhouse` crate to a [`ClickHouseError`].
pub(crate) fn classify(err: clickhouse::error::Error, ctx: Context<'_>) -> ClickHouseError {
    use clickhouse::error::Error as E;
    match err {
        E::Network(e) => ClickHouseError::Unreachable {
            url: crate::secret::redact_url(ctx.url),
            detail: livefunnel_core::errors::chain(&*e),
        },
        E::TimedOut => ClickHouseError::Timeout { timeout_ms: ctx.timeout_ms },
        E::BadResponse(text) => classify_response(&text, ctx),
        other => ClickHouseError::Protocol(other.to_string()),
    }
}

/// Classifies a server's error body: `Code: N, e.displayText() = ...` (old servers)
/// or `Code: N. DB::Exception: ...` (current ones); bodies without a code (a proxy's
/// page, an empty body) start with the HTTP status, as the `clickhouse` crate reports it.
pub(crate) fn classify_response(text: &str, ctx: Context<'_>) -> ClickHouseError {
    let detail = first_line(text);
    let Some(code) = parse_code(text) else {
        let status = text.get(..3).and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
        return match status {
            401 | 403 => ClickHouseError::Auth { user: ctx.user.to_string(), detail },
            // Unparseable answers from something in between: most likely a restarting proxy.
            0 => ClickHouseError::Http { status: 502, detail },
            status => ClickHouseError::Http { status, detail },
        };
    };
    if AUTH_CODES.contains(&code) {
        ClickHouseError::Auth { user: ctx.user.to_string(), detail }
    } else if ACCESS_CODES.contains(&code) {
        ClickHouseError::AccessDenied {
            user: ctx.user.to_string(),
            database: ctx.database.to_string(),
            detail,
        }
    } else if MISSING_CODES.contains(&code) {
        ClickHouseError::Missing { database: ctx.database.to_string(), detail }
    } else if SCHEMA_CODES.contains(&code) {
        ClickHouseError::Schema { code, detail }
    } else {
        // An unknown code is treated as permanent: the data stays buffered and the
        // caller stops, instead of retrying something nobody has looked at forever.
        ClickHouseError::Server { code, detail, retryable: RETRYABLE_CODES.contains(&code) }
    }
}

fn parse_code(text: &str) -> Option<u32> {
    let at = text.find("Code: ")?;
    let digits: String = text[at + 6..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The first line of a server message, shortened: current servers append stack traces.
fn first_line(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or("").trim();
    let mut end = line.len().min(400);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: Context<'static> =
        Context { url: "http://ch:8123", user: "writer", database: "lf", timeout_ms: 1000 };

    #[test]
    fn old_and_new_server_messages_are_classified() {
        let old = "Code: 193, e.displayText() = DB::Exception: Wrong password for user writer, e.what() = DB::Exception";
        let err = classify_response(old, CTX);
        assert!(matches!(err, ClickHouseError::Auth { .. }), "{err:?}");
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(
            text.contains("user writer") && text.contains("clickhouse.user / clickhouse.password"),
            "{text}"
        );

        let new = "Code: 516. DB::Exception: writer: Authentication failed: password is incorrect. \
                   (AUTHENTICATION_FAILED) (version 24.8.1.1)\nstack trace line";
        let err = classify_response(new, CTX);
        assert!(matches!(err, ClickHouseError::Auth { .. }), "{err:?}");
        assert!(!err.to_string().contains("stack trace"));

        for (code, retryable) in
            [(252, true), (241, true), (202, true), (164, false), (497, false), (60, false)]
        {
            let err = classify_response(&format!("Code: {code}. DB::Exception: x"), CTX);
            assert_eq!(err.is_retryable(), retryable, "code {code}: {err}");
        }
        assert!(matches!(
            classify_response("Code: 81. DB::Exception: no db", CTX),
            ClickHouseError::Missing { .. }
        ));
        assert!(matches!(
            classify_response("Code: 33. Cannot read all data", CTX),
            ClickHouseError::Schema { .. }
        ));
        let unknown = classify_response("Code: 48. DB::Exception: not implemented", CTX);
        assert!(!unknown.is_retryable());
        assert_eq!(unknown.code(), Some(48));
    }

    #[test]
    fn bodies_without_a_code_use_the_status() {
        assert!(classify_response("503 Service Unavailable", CTX).is_retryable());
        assert!(classify_response("<html>bad gateway</html>", CTX).is_retryable());
        assert!(matches!(classify_response("401 Unauthorized", CTX), ClickHouseError::Auth { .. }));
        assert!(!classify_response("404 Not Found", CTX).is_retryable());
    }

    #[test]
    fn access_denied_names_user_and_database() {
        let err = classify_response(
            "Code: 164, e.displayText() = DB::Exception: Cannot insert in readonly mode",
            CTX,
        );
        let text = err.to_string();
        assert!(text.contains("user writer") && text.contains("database lf"), "{text}");
        assert!(text.contains("clickhouse.user"), "{text}");
    }
}
