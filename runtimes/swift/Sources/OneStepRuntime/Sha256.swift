import Foundation
#if canImport(CryptoKit)
import CryptoKit
#endif

// Checksums the Kotlin runtime takes from the JDK (MessageDigest, java.util.zip). SHA-256 is
// CryptoKit's on Apple platforms (what a phone runs at every bundle open) and the portable one
// below elsewhere (Linux has no CryptoKit); zlib's checksums have no Foundation API at all.

/// SHA-256, streaming: update with any number of chunks, then digest. CryptoKit where it exists,
/// PortableSha256 elsewhere; both are tested against the same vectors.
public struct Sha256 {
    #if canImport(CryptoKit)
    private var hasher = CryptoKit.SHA256()
    #else
    private var hasher = PortableSha256()
    #endif

    public init() {}

    public mutating func update(_ data: Data) {
        #if canImport(CryptoKit)
        hasher.update(data: data)
        #else
        hasher.update(data)
        #endif
    }

    public mutating func update(_ bytes: [UInt8]) {
        #if canImport(CryptoKit)
        hasher.update(data: bytes)
        #else
        hasher.update(bytes)
        #endif
    }

    /// The 32-byte digest of everything passed to update; the hasher itself is left as it was.
    public func digest() -> [UInt8] {
        #if canImport(CryptoKit)
        return Array(hasher.finalize())
        #else
        return hasher.digest()
        #endif
    }
}

/// SHA-256 (FIPS 180-4) in plain Swift, streaming: update with any number of chunks, then digest.
public struct PortableSha256 {
    private static let K: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    private var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
    private var pending: [UInt8] = []   // fewer than 64 bytes not yet compressed
    private var length: UInt64 = 0      // bytes hashed so far
    private var w = [UInt32](repeating: 0, count: 64)

    public init() {}

    public mutating func update(_ data: Data) {
        data.withUnsafeBytes { update(bytes: $0) }
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update(bytes: $0) }
    }

    /// The 32-byte digest of everything passed to update; the hasher itself is left as it was.
    public func digest() -> [UInt8] {
        var copy = self
        let bits = length &* 8
        var tail: [UInt8] = [0x80]
        while (pending.count + tail.count) % 64 != 56 { tail.append(0) }
        for shift in stride(from: 56, through: 0, by: -8) { tail.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift))) }
        copy.update(tail)
        var out: [UInt8] = []
        for word in copy.h {
            out.append(UInt8(truncatingIfNeeded: word >> 24))
            out.append(UInt8(truncatingIfNeeded: word >> 16))
            out.append(UInt8(truncatingIfNeeded: word >> 8))
            out.append(UInt8(truncatingIfNeeded: word))
        }
        return out
    }

    private mutating func update(bytes: UnsafeRawBufferPointer) {
        length = length &+ UInt64(bytes.count)
        var offset = 0
        if !pending.isEmpty {
            let take = min(64 - pending.count, bytes.count)
            pending.append(contentsOf: bytes[0..<take])
            offset = take
            if pending.count < 64 { return }
            // A local copy: compressing straight from `pending` would overlap two accesses to self.
            let block = pending
            pending.removeAll(keepingCapacity: true)
            block.withUnsafeBytes { compress($0) }
        }
        while bytes.count - offset >= 64 {
            compress(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + 64)]))
            offset += 64
        }
        pending.append(contentsOf: bytes[offset..<bytes.count])
    }

    private mutating func compress(_ block: UnsafeRawBufferPointer) {
        w.withUnsafeMutableBufferPointer { w in
            h.withUnsafeMutableBufferPointer { h in
                PortableSha256.K.withUnsafeBufferPointer { k in PortableSha256.rounds(block, w, h, k) }
            }
        }
    }

    /// The 64 rounds on unchecked buffers and locals (bounds checks, or variables a closure
    /// captures, cost half the throughput).
    private static func rounds(_ block: UnsafeRawBufferPointer, _ w: UnsafeMutableBufferPointer<UInt32>,
                               _ h: UnsafeMutableBufferPointer<UInt32>, _ k: UnsafeBufferPointer<UInt32>) {
        for t in 0..<16 {
            w[t] = UInt32(block[4 * t]) << 24 | UInt32(block[4 * t + 1]) << 16 | UInt32(block[4 * t + 2]) << 8
                | UInt32(block[4 * t + 3])
        }
        for t in 16..<64 {
            let s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
            let s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
            w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
        }
        var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7]
        for t in 0..<64 {
            let bigS1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
            let ch = (e & f) ^ (~e & g)
            let t1 = hh &+ bigS1 &+ ch &+ k[t] &+ w[t]
            let bigS0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
            let maj = (a & b) ^ (a & c) ^ (b & c)
            let t2 = bigS0 &+ maj
            hh = g
            g = f
            f = e
            e = d &+ t1
            d = c
            c = b
            b = a
            a = t1 &+ t2
        }
        h[0] = h[0] &+ a
        h[1] = h[1] &+ b
        h[2] = h[2] &+ c
        h[3] = h[3] &+ d
        h[4] = h[4] &+ e
        h[5] = h[5] &+ f
        h[6] = h[6] &+ g
        h[7] = h[7] &+ hh
    }
}

@inline(__always)
private func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }

/// CRC-32 as PNG chunks use it (ISO 3309, reflected 0xEDB88320), as java.util.zip.CRC32.
public struct CRC32 {
    private static let TABLE: [UInt32] = (0..<256).map { (n: Int) -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? (0xEDB8_8320 ^ (c >> 1)) : (c >> 1) }
        return c
    }

    private var crc: UInt32 = 0xffff_ffff

    public init() {}

    public mutating func update(_ bytes: [UInt8]) {
        for byte in bytes { crc = CRC32.TABLE[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8) }
    }

    public var value: UInt32 { crc ^ 0xffff_ffff }
}

/// Adler-32 as zlib streams end with it (RFC 1950), as java.util.zip.Adler32.
public struct Adler32 {
    private static let MOD: UInt32 = 65521
    // The most bytes whose sums cannot overflow 32 bits before the modulo (zlib's NMAX).
    private static let NMAX = 5552

    private var a: UInt32 = 1
    private var b: UInt32 = 0

    public init() {}

    public mutating func update(_ bytes: [UInt8]) {
        var start = 0
        while start < bytes.count {
            let end = min(start + Adler32.NMAX, bytes.count)
            for byte in bytes[start..<end] {
                a = a &+ UInt32(byte)
                b = b &+ a
            }
            a %= Adler32.MOD
            b %= Adler32.MOD
            start = end
        }
    }

    public var value: UInt32 { (b << 16) | a }
}
