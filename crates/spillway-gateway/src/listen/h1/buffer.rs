//! A read buffer with a filled window, for parsing heads in place and passing bodies on.
//!
//! Bytes are read into the spare tail, parsed or forwarded from the filled window, and
//! consumed from its front; the window moves back to the start only when the tail runs out,
//! so a pipelined next request stays where it is. The storage is initialised once, when the
//! buffer is made: buffers are reused across requests through the worker's pool.

/// Size of a pooled buffer: a usual request head, or a small response, in one read. Buffers
/// grow for larger heads, buffered request bodies and streamed responses; a grown buffer is
/// freed after its exchange, so a burst of large exchanges leaves nothing large behind.
pub const BUF_SIZE: usize = 4 * 1024;

/// A byte buffer with a filled window `start..end`.
#[derive(Debug)]
pub struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    /// An empty buffer of `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Buf {
        Buf { data: vec![0; capacity].into_boxed_slice(), start: 0, end: 0 }
    }

    /// The filled bytes.
    #[inline]
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// The filled bytes, to edit in place.
    #[inline]
    pub fn filled_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    /// Number of filled bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether nothing is filled.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Total storage.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Drops `n` bytes from the front of the filled window.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room to read into, after the filled bytes (moved to the front first when the tail is
    /// full). Empty only when the filled window takes the whole capacity.
    #[inline]
    pub fn spare(&mut self) -> &mut [u8] {
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.data[self.end..]
    }

    /// Marks `n` more bytes (just read into [`Buf::spare`]) as filled.
    #[inline]
    pub fn advance(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }

    /// Makes room for at least `total` filled bytes, growing the storage if needed.
    pub fn reserve_total(&mut self, total: usize) {
        if self.data.len() - self.start >= total {
            return;
        }
        let mut data = vec![0; total.max(self.data.len())].into_boxed_slice();
        let len = self.len();
        data[..len].copy_from_slice(self.filled());
        self.data = data;
        self.start = 0;
        self.end = len;
    }

    /// Makes room for `n` more bytes after the filled ones: the filled window moved to the
    /// front, then the storage grown (at least doubled) if that is not enough.
    fn room_for(&mut self, n: usize) {
        if self.data.len() - self.end >= n {
            return;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.data.len() - self.end < n {
            self.reserve_total((self.len() + n).max(self.capacity() * 2));
        }
    }

    /// Appends `bytes` after the filled ones, growing the storage when they do not fit: for
    /// heads spelled here rather than read.
    #[inline]
    pub fn put(&mut self, bytes: &[u8]) {
        self.room_for(bytes.len());
        if let Some(room) = self.data.get_mut(self.end..self.end + bytes.len()) {
            room.copy_from_slice(bytes);
            self.end += bytes.len();
        }
    }

    /// Appends one HTTP/1.1 field line, `name: value` and CRLF (room made once, the
    /// separators stored by hand: two copies per line, not four).
    pub fn put_field(&mut self, name: &[u8], value: &[u8]) {
        let len = name.len() + value.len() + 4;
        self.room_for(len);
        let Some(line) = self.data.get_mut(self.end..self.end + len) else { return };
        let (n, rest) = line.split_at_mut(name.len());
        n.copy_from_slice(name);
        let (sep, rest) = rest.split_at_mut(2);
        sep.copy_from_slice(b": ");
        let (v, end) = rest.split_at_mut(value.len());
        v.copy_from_slice(value);
        end.copy_from_slice(b"\r\n");
        self.end += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(b: &mut Buf, bytes: &[u8]) {
        let spare = b.spare();
        spare[..bytes.len()].copy_from_slice(bytes);
        b.advance(bytes.len());
    }

    #[test]
    fn consumed_bytes_leave_the_front_and_an_emptied_buffer_starts_over() {
        let mut b = Buf::with_capacity(8);
        fill(&mut b, b"abcdef");
        b.consume(2);
        assert_eq!(b.filled(), b"cdef");
        b.consume(10);
        assert!(b.is_empty());
        assert_eq!(b.spare().len(), 8);
    }

    #[test]
    fn a_full_tail_moves_the_window_to_the_front() {
        let mut b = Buf::with_capacity(8);
        fill(&mut b, b"abcdefgh");
        b.consume(5);
        assert_eq!(b.spare().len(), 5);
        assert_eq!(b.filled(), b"fgh");
    }

    #[test]
    fn appended_bytes_and_field_lines_follow_the_filled_ones_whatever_the_room() {
        // Every start offset and fill of a small buffer: room is made by moving the window to
        // the front or by growing, never by losing a byte.
        for consumed in 0..4 {
            for filled in consumed..8 {
                let mut b = Buf::with_capacity(8);
                fill(&mut b, &b"01234567"[..filled]);
                b.consume(consumed);
                let mut want = b.filled().to_vec();
                b.put(b"abc");
                b.put_field(b"name", b"value");
                b.put(b"");
                want.extend_from_slice(b"abcname: value\r\n");
                assert_eq!(b.filled(), &want[..], "consumed {consumed}, filled {filled}");
            }
        }
    }

    #[test]
    fn reserving_grows_and_keeps_the_filled_bytes() {
        let mut b = Buf::with_capacity(4);
        fill(&mut b, b"abcd");
        b.consume(1);
        b.reserve_total(10);
        assert_eq!(b.filled(), b"bcd");
        assert!(b.capacity() >= 10);
        assert_eq!(b.spare().len(), b.capacity() - 3);
    }
}
