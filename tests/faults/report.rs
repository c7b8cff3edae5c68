//! What a scenario found, and its summary line.

use crate::checker::{QueueCheck, ReadCheck, SubCheck};

/// What a scenario found.
pub struct Report {
    pub queue: QueueCheck,
    pub reads: ReadCheck,
    pub subs: SubCheck,
    pub faults: u32,
    pub outage_reads: bool,
}

impl Report {
    pub fn valid(&self) -> bool {
        self.queue.valid() && self.reads.valid(self.outage_reads) && self.subs.valid(self.outage_reads)
    }

    /// The counts, on one line.
    pub fn counts(&self) -> String {
        let (q, r, s) = (&self.queue, &self.reads, &self.subs);
        format!(
            "acked={} lost={} duplicated={} unexpected={} recovered={} failed={} refused={} failed_but_stored={} wrong_id={} \
             info={} faults={} reads={} stale={} gaps={} vanished={} reordered={} subscribers={} delivered={} \
             sub_missing={} sub_dup={} sub_order={} reconnects={}",
            q.acked,
            q.lost,
            q.duplicated,
            q.unexpected,
            q.recovered,
            q.failed,
            q.refused,
            q.failed_but_stored,
            q.wrong_id,
            q.info,
            self.faults,
            r.reads,
            r.stale,
            r.gaps,
            r.vanished,
            r.reordered,
            s.subscribers,
            s.delivered,
            s.missing,
            s.duplicated,
            s.out_of_order,
            s.reconnects,
        )
    }
}
