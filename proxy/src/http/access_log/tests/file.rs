//! Lines reaching a real file, synchronised by `flush`, never by sleeping.

use super::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh path in the temp dir, removed on drop.
struct TempLog(PathBuf);

impl TempLog {
    fn new(what: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        TempLog(std::env::temp_dir().join(format!(
            "tern-accesslog-{what}-{}-{}.log",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )))
    }

    fn logger(&self, format: &str) -> AccessLog {
        from_yaml(&format!(
            r#"
name: file
typed_config:
  "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
  path: "{}"
  log_format: {{text_format_source: {{inline_string: "{format}"}}}}
"#,
            self.0.display()
        ))
        .expect("valid")
    }

    fn read(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("rotated"));
    }
}

#[test]
fn logged_lines_reach_the_file_in_order() {
    let file = TempLog::new("order");
    let log = file.logger("%RESPONSE_CODE% %REQ(:PATH)%\\n");
    for code in [200, 404, 503] {
        log.log(&LogRecord {
            response_code: code,
            path: format!("/{code}"),
            ..Default::default()
        });
    }
    assert!(log.flush(), "writer confirmed");
    assert_eq!(file.read(), "200 /200\n404 /404\n503 /503\n");
    assert_eq!(log.dropped(), 0);
}

#[test]
fn logs_naming_one_path_share_one_writer() {
    let file = TempLog::new("shared");
    let a = file.logger("a %RESPONSE_CODE%\\n");
    let b = file.logger("b %RESPONSE_CODE%\\n");
    assert!(Arc::ptr_eq(&a.inner.sink, &b.inner.sink));
    a.log(&LogRecord {
        response_code: 1,
        ..Default::default()
    });
    b.log(&LogRecord {
        response_code: 2,
        ..Default::default()
    });
    assert!(b.flush());
    assert_eq!(file.read(), "a 1\nb 2\n");
}

#[test]
fn lines_from_many_threads_arrive_whole() {
    let file = TempLog::new("threads");
    let log = file.logger("%CONNECTION_ID% %REQ(:PATH)%\\n");
    let path = "/".to_string() + &"x".repeat(300);
    std::thread::scope(|scope| {
        for thread in 0..4u64 {
            let (log, path) = (&log, &path);
            scope.spawn(move || {
                for _ in 0..250 {
                    log.log(&LogRecord {
                        connection_id: thread,
                        path: path.clone(),
                        ..Default::default()
                    });
                }
            });
        }
    });
    assert!(log.flush());
    let text = file.read();
    assert_eq!(text.lines().count() + log.dropped() as usize, 1000);
    assert!(
        text.lines()
            .all(|l| l.ends_with(&path) && l.len() == path.len() + 2)
    );
}

#[test]
fn filtered_records_are_not_written() {
    let file = TempLog::new("filtered");
    let log = from_yaml(&format!(
        r#"
filter: {{status_code_filter: {{comparison: {{op: GE, value: {{default_value: 500, runtime_key: k}}}}}}}}
typed_config:
  "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
  path: "{}"
  format: "%RESPONSE_CODE%\n"
"#,
        file.0.display()
    ))
    .expect("valid");
    for code in [200, 503, 404, 500] {
        log.log(&LogRecord {
            response_code: code,
            ..Default::default()
        });
    }
    assert!(log.flush());
    assert_eq!(file.read(), "503\n500\n");
}

#[test]
fn reopen_after_rotation_writes_to_a_new_file() {
    let file = TempLog::new("rotate");
    let log = file.logger("%RESPONSE_CODE%\\n");
    let record = |code| LogRecord {
        response_code: code,
        ..Default::default()
    };
    log.log(&record(1));
    assert!(log.flush());
    let rotated = file.0.with_extension("rotated");
    std::fs::rename(&file.0, &rotated).expect("rename");
    log.log(&record(2));
    assert!(log.flush());
    assert!(super::super::reopen_files() >= 1);
    log.log(&record(3));
    assert!(log.flush());
    assert_eq!(
        std::fs::read_to_string(&rotated).expect("rotated"),
        "1\n2\n"
    );
    assert_eq!(file.read(), "3\n");
}
