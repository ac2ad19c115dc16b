package dev.onestep.runtime

/** A test runner for machines without JUnit (Maven is unreachable here): prints each failure and
 *  a closing "N passed, N failed" line that CI reads; exit status 1 when anything failed. With
 *  ONESTEP_CASE_LOG set it writes every case's name there (`make test-swift` compares Swift's). */
class TestHarness {
    private val results = mutableListOf<Pair<String, Boolean>>()

    fun test(name: String, body: () -> Unit) {
        try {
            body()
            results.add(name to true)
        } catch (e: Throwable) {
            results.add(name to false)
            println("FAIL $name: ${e::class.simpleName}: ${e.message}")
        }
    }

    fun finish(): Int {
        val failed = results.count { !it.second }
        println("${results.size - failed} passed, $failed failed")
        System.getenv("ONESTEP_CASE_LOG")?.takeIf { it.isNotEmpty() }?.let { path ->
            java.io.File(path).writeText(results.joinToString("") { (name, ok) -> "${if (ok) "PASS" else "FAIL"} $name\n" })
        }
        return if (failed == 0) 0 else 1
    }
}

fun check(condition: Boolean, message: () -> String) {
    if (!condition) throw AssertionError(message())
}

fun <T> checkEqual(expected: T, actual: T, what: String) {
    if (expected != actual) throw AssertionError("$what: expected $expected, got $actual")
}
