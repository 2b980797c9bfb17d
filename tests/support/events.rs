//! A webhook on loopback that receives CloudEvents in HTTP binary or
//! batched mode, as the operator's audit trail sends them: it keeps each
//! request's headers and body, and answers 204. Plain HTTP/1.1 with
//! keep-alive, a thread per connection: enough for a test's trickle. It can
//! start closed, holding every request unanswered until it is opened.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    /// Header names in lowercase.
    pub headers: BTreeMap<String, String>,
    pub body: serde_json::Value,
}

pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    gate: Arc<Gate>,
}

/// Whether requests are answered yet.
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

/// One CloudEvent, from either mode: its attributes (`id`, `type`, ...,
/// without binary mode's `ce-` prefix) and its data.
#[derive(Clone, Debug)]
pub struct CloudEvent {
    pub attributes: BTreeMap<String, String>,
    pub data: serde_json::Value,
}

impl Receiver {
    /// A receiver that answers every request at once.
    pub fn start() -> Self {
        Self::with_gate(true)
    }

    /// A receiver that holds every request, unanswered and not received,
    /// until [`Receiver::open`].
    pub fn closed() -> Self {
        Self::with_gate(false)
    }

    fn with_gate(open: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Gate {
            open: Mutex::new(open),
            opened: Condvar::new(),
        });
        let (store, held) = (received.clone(), gate.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (store, gate) = (store.clone(), held.clone());
                std::thread::spawn(move || serve(stream, &store, &gate));
            }
        });
        Self {
            url,
            received,
            gate,
        }
    }

    /// Answers the requests held, and every one after them.
    pub fn open(&self) {
        *self.gate.open.lock().unwrap() = true;
        self.gate.opened.notify_all();
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Every event received: one per binary-mode request, each element of
    /// a batched-mode request's array.
    pub fn events(&self) -> Vec<CloudEvent> {
        let mut events = Vec::new();
        for request in self.received() {
            let batched = request.headers.get("content-type").map(String::as_str)
                == Some("application/cloudevents-batch+json");
            if !batched {
                let attributes = request
                    .headers
                    .iter()
                    .filter_map(|(name, value)| {
                        Some((name.strip_prefix("ce-")?.to_owned(), value.clone()))
                    })
                    .collect();
                events.push(CloudEvent {
                    attributes,
                    data: request.body,
                });
                continue;
            }
            let serde_json::Value::Array(batch) = request.body else {
                panic!("a batched request whose body is not an array: {request:?}");
            };
            for event in batch {
                let serde_json::Value::Object(mut members) = event else {
                    panic!("an event in a batch that is not an object: {event}");
                };
                let data = members.remove("data").unwrap_or_default();
                let attributes = members
                    .into_iter()
                    .map(|(name, value)| match value {
                        serde_json::Value::String(text) => (name, text),
                        other => panic!("attribute {name} is not a string: {other}"),
                    })
                    .collect();
                events.push(CloudEvent { attributes, data });
            }
        }
        events
    }
}

fn serve(stream: std::net::TcpStream, store: &Mutex<Vec<Received>>, gate: &Gate) {
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut open = gate.open.lock().unwrap();
        while !*open {
            open = gate.opened.wait(open).unwrap();
        }
        drop(open);
        store.lock().unwrap().push(Received {
            headers,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        });
        let reply = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(reply).is_err() {
            return;
        }
    }
}
