package android.content;
// STUB for type-checking only: the two members AssetBundles uses, with android.jar's signatures
public abstract class Context {
    public abstract java.io.File getFilesDir();
    public abstract android.content.res.AssetManager getAssets();
}
