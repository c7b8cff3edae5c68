//! `Writers`: background save load (one task per thread) for the fault tests,
//! recording which saves were acknowledged and which failed.

use std::time::Duration;

use serde_json::{json, Value};

use super::{TestApp, SAVE};

/// Background writers: one task per thread, saving unique messages (each with
/// a fresh `clientMessageId`) until stopped. Every request is bounded, so a
/// hung save shows up as a failure rather than a stuck test.
pub struct Writers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// (thread, id) of every acknowledged save.
    acked: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// Responses of saves that failed (or `"timed out"`).
    failed: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Writers {
    /// Starts one writer per thread, pausing `pause` between saves.
    pub fn start(app: &TestApp, threads: &[&str], pause: Duration) -> Writers {
        use std::sync::{atomic::Ordering, Arc};
        let w = Writers { stop: Arc::default(), tasks: Vec::new(), acked: Arc::default(), failed: Arc::default() };
        let tasks = threads.iter().map(|t| {
            let (http, url, thread) = (app.http.clone(), app.url(), t.to_string());
            let (stop, acked, failed) = (w.stop.clone(), w.acked.clone(), w.failed.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let input = json!({ "threadId": thread, "role": "USER",
                        "content": format!("{thread} #{n}"), "clientMessageId": format!("{thread}-{n}") });
                    let body = json!({ "query": SAVE, "variables": { "input": input } });
                    let sent = http.post(&url).json(&body).send();
                    let r: Value = match tokio::time::timeout(Duration::from_secs(15), sent).await {
                        Ok(Ok(resp)) => resp.json().await.unwrap_or_else(|e| json!(e.to_string())),
                        Ok(Err(e)) => json!(e.to_string()),
                        Err(_) => json!("timed out"),
                    };
                    match r["data"]["saveMessage"]["id"].as_str() {
                        Some(id) => acked.lock().expect("lock").push((thread.clone(), id.to_owned())),
                        None => failed.lock().expect("lock").push(r),
                    }
                    tokio::time::sleep(pause).await;
                }
            })
        });
        Writers { tasks: tasks.collect(), ..w }
    }

    /// Saves acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    /// The (thread, id) pairs acknowledged so far.
    pub fn snapshot(&self) -> Vec<(String, String)> {
        self.acked.lock().expect("lock").clone()
    }

    /// Stops the writers; returns the acknowledged (thread, id) pairs and the failures.
    pub async fn finish(self) -> (Vec<(String, String)>, Vec<Value>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("writer task");
        }
        let acked = std::mem::take(&mut *self.acked.lock().expect("lock"));
        let failed = std::mem::take(&mut *self.failed.lock().expect("lock"));
        (acked, failed)
    }
}
