package android.util;

// STUB for type-checking only: the one member ExecuTorch's Tensor uses, with android.jar's signature
public final class Log {
    private Log() {}

    public static int e(String tag, String msg) { throw new UnsupportedOperationException(); }
}
