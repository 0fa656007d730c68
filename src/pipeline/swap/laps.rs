//! Step timings of the swap's locked section, recorded with each lock attempt
//! (`reproject.lock_attempts.attempt -> 'steps'`), so a slow hold can be explained afterwards
//! without a profiler.

use std::sync::Mutex;
use std::time::Instant;

/// Milliseconds per named step since [`Laps::start`], in order. Interior mutability, because
/// the timer travels by shared reference through the swap's helpers.
#[derive(Debug)]
pub struct Laps {
    inner: Mutex<(Instant, Vec<(String, f64)>)>,
}

impl Default for Laps {
    fn default() -> Self {
        Laps {
            inner: Mutex::new((Instant::now(), Vec::new())),
        }
    }
}

impl Laps {
    /// Forgets earlier steps and starts the clock.
    pub fn start(&self) {
        *self.inner.lock().unwrap() = (Instant::now(), Vec::new());
    }

    /// Ends the step `name`: the time since the previous step ended (or the start). Steps of
    /// the same name add up.
    pub fn lap(&self, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        let now = Instant::now();
        let ms = now.duration_since(inner.0).as_secs_f64() * 1000.0;
        inner.0 = now;
        match inner.1.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) => *total += ms,
            None => inner.1.push((name.to_string(), ms)),
        }
    }

    /// The steps so far as a JSON object (name → ms, rounded to 0.1 ms), in order.
    pub fn to_json(&self) -> serde_json::Value {
        let inner = self.inner.lock().unwrap();
        let mut map = serde_json::Map::new();
        for (name, ms) in &inner.1 {
            map.insert(name.clone(), serde_json::json!((ms * 10.0).round() / 10.0));
        }
        serde_json::Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_per_name_in_order() {
        let laps = Laps::default();
        laps.start();
        laps.lap("a");
        std::thread::sleep(std::time::Duration::from_millis(3));
        laps.lap("b");
        laps.lap("a");
        let json = laps.to_json();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["a", "b"]);
        assert!(json["b"].as_f64().unwrap() >= 3.0, "{json}");
        laps.start();
        assert_eq!(laps.to_json(), serde_json::json!({}));
    }
}
