import CoreGraphics
import Foundation

/// The runtime's pixels (8-bit RGB, three bytes per pixel, rows top to bottom, no padding: `Image.rgb`) as a
/// CGImage, the counterpart of `Image.argb()` feeding Android's Bitmap. The PNG `generate` writes carries no
/// colour profile, so the values are drawn as sRGB, as every PNG viewer shows that file.
func makeCGImage(width: Int, height: Int, rgb: Data) -> CGImage? {
    guard width > 0, height > 0, rgb.count == width * height * 3,
          let provider = CGDataProvider(data: rgb as CFData),
          let space = CGColorSpace(name: CGColorSpace.sRGB)
    else { return nil }
    return CGImage(width: width, height: height, bitsPerComponent: 8, bitsPerPixel: 24, bytesPerRow: width * 3,
                   space: space, bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.none.rawValue),
                   provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
}
