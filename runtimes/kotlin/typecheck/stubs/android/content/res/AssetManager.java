package android.content.res;
// STUB for type-checking only: the members AssetBundles uses, with android.jar's signatures
public final class AssetManager {
    public java.io.InputStream open(String fileName) throws java.io.IOException { throw new UnsupportedOperationException(); }
    public String[] list(String path) throws java.io.IOException { throw new UnsupportedOperationException(); }
}
