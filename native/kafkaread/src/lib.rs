//! Reads one Kafka partition in batches straight into Python lists: the flows' Kafka source fast path.
//!
//! confluent-kafka's `Consumer.consume()` builds one Python `Message` object per record (a topic string
//! decoded, value and key copied, a tracked object to free again): ~0.6-0.9 us per record here, most of the
//! flow's worker thread reading a backlog (docs/benchmarks.md, session 17). This reader makes the same
//! librdkafka call confluent-kafka makes (`rd_kafka_consume_batch_queue` on the consumer queue of a consumer
//! with an assigned partition), copies the records out with the GIL released, and hands Python only what the
//! source keeps: a list of offsets, a list of values as `bytes` and, if asked, the timestamps.
//!
//! Configuration is librdkafka's own (`key -> value` strings, as confluent-kafka takes them). librdkafka's
//! log lines go to its default, stderr, as with confluent-kafka when no logger is set; so do client-level
//! errors such as "all brokers down" (confluent-kafka drops those unless given an `error_cb`). Records with an
//! error (a broker error, end of partition) come back as `(text, fatal)` pairs, `__FATAL` being fatal.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use rdkafka_sys as rd;
use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr;

/// `RD_KAFKA_RESP_ERR__PARTITION_EOF`, `RD_KAFKA_RESP_ERR__FATAL` (codes are read as plain C ints, below)
const ERR_PARTITION_EOF: c_int = -191;
const ERR_FATAL: c_int = -150;
/// `RD_KAFKA_OFFSET_INVALID`: no watermark known
const OFFSET_INVALID: i64 = -1001;
/// room for librdkafka's error strings
const ERRSTR_LEN: usize = 512;

/// The librdkafka handles of one open reader (thread-safe in librdkafka: used with the GIL released).
#[derive(Clone, Copy)]
struct Handles {
    rk: *mut rd::rd_kafka_t,
    queue: *mut rd::rd_kafka_queue_t,
}

// SAFETY: librdkafka's client handle and queue handles may be used from any thread.
unsafe impl Send for Handles {}
unsafe impl Sync for Handles {}

/// What one `consume` returned, copied out of librdkafka's messages.
#[derive(Default)]
struct Read {
    offsets: Vec<i64>,
    data: Vec<u8>,
    ends: Vec<usize>,
    stamps: Vec<(i32, i64)>,
    eof: bool,
    errors: Vec<(String, bool)>,
}

// librdkafka's error functions with the code as a plain C int: a code newer than rdkafka-sys's enum must never
// be read into it (an unknown discriminant is undefined behaviour in Rust)
extern "C" {
    fn rd_kafka_err2name(err: c_int) -> *const c_char;
    fn rd_kafka_err2str(err: c_int) -> *const c_char;
    fn rd_kafka_last_error() -> c_int;
    fn rd_kafka_poll_set_consumer(rk: *mut rd::rd_kafka_t) -> c_int;
    fn rd_kafka_metadata(
        rk: *mut rd::rd_kafka_t,
        all_topics: c_int,
        only_rkt: *mut rd::rd_kafka_topic_t,
        metadatap: *mut *const rd::rd_kafka_metadata,
        timeout_ms: c_int,
    ) -> c_int;
    fn rd_kafka_assign(rk: *mut rd::rd_kafka_t, partitions: *const rd::rd_kafka_topic_partition_list_t) -> c_int;
    fn rd_kafka_get_watermark_offsets(
        rk: *mut rd::rd_kafka_t,
        topic: *const c_char,
        partition: i32,
        low: *mut i64,
        high: *mut i64,
    ) -> c_int;
}

fn err_text(code: c_int) -> String {
    // SAFETY: both accept any code and return static strings.
    unsafe {
        let name = CStr::from_ptr(rd_kafka_err2name(code)).to_string_lossy();
        let text = CStr::from_ptr(rd_kafka_err2str(code)).to_string_lossy();
        format!("{name} ({code}): {text}")
    }
}

impl Handles {
    /// One `rd_kafka_consume_batch_queue` of at most `max` records, waiting up to `timeout_ms` for them.
    fn consume(self, max: usize, timeout_ms: c_int, stamps: bool) -> Read {
        let mut out = Read::default();
        let mut msgs: Vec<*mut rd::rd_kafka_message_t> = Vec::with_capacity(max);
        // SAFETY: `msgs` has room for `max` pointers; librdkafka writes `n <= max` of them.
        let n = unsafe { rd::rd_kafka_consume_batch_queue(self.queue, timeout_ms, msgs.as_mut_ptr(), max) };
        if n < 0 {
            // SAFETY: reads this thread's last error code.
            let code = unsafe { rd_kafka_last_error() };
            out.errors.push((format!("consume failed: {}", err_text(code)), false));
            return out;
        }
        // SAFETY: the first `n` slots were written.
        unsafe { msgs.set_len(n as usize) };
        out.offsets.reserve(msgs.len());
        out.ends.reserve(msgs.len());
        // SAFETY: as below; one allocation for all the values instead of doubling through a backlog batch
        out.data.reserve(msgs.iter().map(|&m| unsafe { (*m).len }).sum());
        for &m in &msgs {
            // SAFETY: every message returned stays valid until destroyed below; `err` is read as an integer.
            unsafe {
                let code = ptr::read(ptr::addr_of!((*m).err) as *const c_int);
                if code != 0 {
                    if code == ERR_PARTITION_EOF {
                        out.eof = true;
                    } else if !out.eof {
                        let reason = if (*m).payload.is_null() {
                            err_text(code)
                        } else {
                            let raw = std::slice::from_raw_parts((*m).payload as *const u8, (*m).len);
                            format!("{}: {}", err_text(code), String::from_utf8_lossy(raw))
                        };
                        out.errors.push((reason, code == ERR_FATAL));
                    }
                } else if !out.eof {
                    out.offsets.push((*m).offset);
                    if !(*m).payload.is_null() {
                        out.data
                            .extend_from_slice(std::slice::from_raw_parts((*m).payload as *const u8, (*m).len));
                    }
                    out.ends.push(out.data.len());
                    if stamps {
                        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
                        let ts = rd::rd_kafka_message_timestamp(m, &mut kind);
                        out.stamps.push((kind as i32, ts));
                    }
                }
                rd::rd_kafka_message_destroy(m);
            }
        }
        out
    }
}

/// One assigned partition of one topic, read in batches (see the module documentation).
#[pyclass(module = "kafkaread")]
struct PartitionReader {
    handles: Option<Handles>,
    topic: CString,
    partition: i32,
}

impl PartitionReader {
    fn open(&self) -> PyResult<Handles> {
        self.handles
            .ok_or_else(|| PyRuntimeError::new_err("the reader is closed"))
    }
}

fn timeout_ms(seconds: f64) -> PyResult<c_int> {
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(PyValueError::new_err(format!(
            "timeout must be a finite number of seconds >= 0, got {seconds}"
        )));
    }
    Ok((seconds * 1000.0).round().min(c_int::MAX as f64) as c_int)
}

fn cstring(what: &str, s: &str) -> PyResult<CString> {
    CString::new(s).map_err(|_| PyValueError::new_err(format!("{what} contains a NUL character: {s:?}")))
}

#[pymethods]
impl PartitionReader {
    /// A consumer with librdkafka settings `config` (string keys and values, applied in the dict's order) that
    /// will read `partition` of `topic`. ValueError names a setting librdkafka rejects; `group.id` is required.
    #[new]
    fn new(config: &Bound<'_, PyDict>, topic: &str, partition: i32) -> PyResult<Self> {
        // every string checked before librdkafka allocates anything: an error below leaves nothing behind
        let topic = cstring("topic", topic)?;
        let mut pairs = Vec::with_capacity(config.len());
        for (key, value) in config.iter() {
            let (key, value): (String, String) = (key.extract()?, value.extract()?);
            pairs.push((
                cstring("config key", &key)?,
                cstring("config value", &value)?,
                key,
                value,
            ));
        }
        let mut errstr = [0 as c_char; ERRSTR_LEN];
        // SAFETY: conf is owned here until rd_kafka_new takes it (on success only); rk is destroyed on every
        // failure after it exists.
        unsafe {
            let conf = rd::rd_kafka_conf_new();
            for (k, v, key, value) in &pairs {
                let res = rd::rd_kafka_conf_set(conf, k.as_ptr(), v.as_ptr(), errstr.as_mut_ptr(), ERRSTR_LEN);
                if res != rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
                    rd::rd_kafka_conf_destroy(conf);
                    let why = CStr::from_ptr(errstr.as_ptr()).to_string_lossy();
                    return Err(PyValueError::new_err(format!("Kafka setting {key}={value}: {why}")));
                }
            }
            let rk = rd::rd_kafka_new(
                rd::rd_kafka_type_t::RD_KAFKA_CONSUMER,
                conf,
                errstr.as_mut_ptr(),
                ERRSTR_LEN,
            );
            if rk.is_null() {
                rd::rd_kafka_conf_destroy(conf);
                let why = CStr::from_ptr(errstr.as_ptr()).to_string_lossy();
                return Err(PyRuntimeError::new_err(format!(
                    "cannot create a Kafka consumer: {why}"
                )));
            }
            // without a group.id librdkafka makes no consumer group: no consumer queue to read (NULL)
            let queue = if rd_kafka_poll_set_consumer(rk) == 0 {
                rd::rd_kafka_queue_get_consumer(rk)
            } else {
                ptr::null_mut()
            };
            if queue.is_null() {
                rd::rd_kafka_destroy(rk);
                return Err(PyValueError::new_err(
                    "Kafka setting group.id is required (a non-empty string)",
                ));
            }
            Ok(Self {
                handles: Some(Handles { rk, queue }),
                topic,
                partition,
            })
        }
    }

    /// Asks the brokers for the topic's metadata (its partitions' leaders), waiting up to `timeout_s`;
    /// raises RuntimeError if none answered.
    fn fetch_metadata(&self, py: Python<'_>, timeout_s: f64) -> PyResult<()> {
        let h = self.open()?;
        let ms = timeout_ms(timeout_s)?;
        let topic = self.topic.clone();
        let code = py.detach(move || {
            let h = h; // the whole (Send) struct, not its raw pointer fields
                       // SAFETY: the topic handle and metadata are released before returning.
            unsafe {
                let rkt = rd::rd_kafka_topic_new(h.rk, topic.as_ptr(), ptr::null_mut());
                let mut md: *const rd::rd_kafka_metadata = ptr::null();
                let err = rd_kafka_metadata(h.rk, 0, rkt, &mut md, ms);
                if !md.is_null() {
                    rd::rd_kafka_metadata_destroy(md);
                }
                if !rkt.is_null() {
                    rd::rd_kafka_topic_destroy(rkt);
                }
                err
            }
        });
        if code != 0 {
            return Err(PyRuntimeError::new_err(format!("no metadata: {}", err_text(code))));
        }
        Ok(())
    }

    /// Starts reading at `offset` (or librdkafka's logical offsets: -2 beginning, -1 end).
    fn assign(&self, offset: i64) -> PyResult<()> {
        let h = self.open()?;
        // SAFETY: the list is created, filled and destroyed here; rd_kafka_assign copies it.
        let code = unsafe {
            let list = rd::rd_kafka_topic_partition_list_new(1);
            let part = rd::rd_kafka_topic_partition_list_add(list, self.topic.as_ptr(), self.partition);
            (*part).offset = offset;
            let err = rd_kafka_assign(h.rk, list);
            rd::rd_kafka_topic_partition_list_destroy(list);
            err
        };
        if code != 0 {
            return Err(PyRuntimeError::new_err(format!(
                "cannot assign the partition: {}",
                err_text(code)
            )));
        }
        Ok(())
    }

    /// Up to `max_messages` records, waiting up to `timeout_s` for them (librdkafka returns early once it has
    /// `max_messages`): `(offsets, values, timestamps, eof, errors)`, or None if nothing at all came.
    /// `timestamps` (with `stamps`) is a list of `(type, ms)` pairs as confluent-kafka's `Message.timestamp()`,
    /// else None. Records after an end-of-partition marker are dropped (there are none of this partition);
    /// `errors` holds `(text, fatal)` for each error record before it.
    #[pyo3(signature = (max_messages, timeout_s, stamps=false))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        max_messages: usize,
        timeout_s: f64,
        stamps: bool,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let h = self.open()?;
        if max_messages == 0 {
            return Err(PyValueError::new_err("max_messages must be positive"));
        }
        let ms = timeout_ms(timeout_s)?;
        let got = py.detach(move || h.consume(max_messages, ms, stamps));
        if got.offsets.is_empty() && got.errors.is_empty() && !got.eof {
            return Ok(None);
        }
        let offsets = PyList::new(py, &got.offsets)?;
        let mut start = 0;
        let values = PyList::new(
            py,
            got.ends.iter().map(|&end| {
                let v = PyBytes::new(py, &got.data[start..end]);
                start = end;
                v
            }),
        )?;
        let times = if stamps {
            PyList::new(py, &got.stamps)?.into_any()
        } else {
            py.None().into_bound(py)
        };
        let errors = PyList::new(py, &got.errors)?;
        Ok(Some(PyTuple::new(
            py,
            [
                offsets.into_any(),
                values.into_any(),
                times,
                got.eof.into_pyobject(py)?.to_owned().into_any(),
                errors.into_any(),
            ],
        )?))
    }

    /// The partition's low and high watermarks as of the last fetch (no broker request), or None if unknown.
    fn watermarks(&self) -> PyResult<Option<(i64, i64)>> {
        let h = self.open()?;
        let (mut low, mut high) = (OFFSET_INVALID, OFFSET_INVALID);
        // SAFETY: reads librdkafka's cached offsets into the two locals.
        let code =
            unsafe { rd_kafka_get_watermark_offsets(h.rk, self.topic.as_ptr(), self.partition, &mut low, &mut high) };
        if code != 0 || high == OFFSET_INVALID {
            return Ok(None);
        }
        Ok(Some((low, high)))
    }

    /// Leaves the partition and frees the consumer (idempotent).
    fn close(&mut self, py: Python<'_>) {
        if let Some(h) = self.handles.take() {
            py.detach(move || h.destroy());
        }
    }
}

impl Handles {
    fn destroy_unclosed(self) {
        // SAFETY: called once, when a dropped reader gives its handles up.
        unsafe {
            rd::rd_kafka_queue_destroy(self.queue);
            rd::rd_kafka_destroy_flags(self.rk, rd::RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        }
    }

    fn destroy(self) {
        // SAFETY: called once, when the reader gives its handles up.
        unsafe {
            rd::rd_kafka_queue_destroy(self.queue);
            rd::rd_kafka_consumer_close(self.rk);
            rd::rd_kafka_destroy(self.rk);
        }
    }
}

impl Drop for PartitionReader {
    /// A reader dropped without `close()` (a flow that failed): destroy without the consumer close, which waits
    /// on librdkafka's threads, and with the GIL released, as confluent-kafka's `Consumer` does.
    fn drop(&mut self) {
        if let Some(h) = self.handles.take() {
            Python::attach(|py| py.detach(move || h.destroy_unclosed()));
        }
    }
}

#[pymodule]
fn kafkaread(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PartitionReader>()?;
    // SAFETY: rd_kafka_version_str returns a static string.
    let version = unsafe { CStr::from_ptr(rd::rd_kafka_version_str()) }
        .to_string_lossy()
        .into_owned();
    m.add("LIBRDKAFKA_VERSION", version)?;
    Ok(())
}
