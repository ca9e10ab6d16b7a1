//! Bulkheads: a bounded number of requests in flight plus a bounded queue with a maximum wait, served by criticality.
