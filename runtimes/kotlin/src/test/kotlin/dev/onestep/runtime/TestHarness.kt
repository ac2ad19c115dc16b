package dev.onestep.runtime

/** A test runner for machines without JUnit (Maven is unreachable here): prints each failure and
 *  a closing "N passed, N failed" line that CI reads; exit status 1 when anything failed. */
class TestHarness {
    private var passed = 0
    private val failures = mutableListOf<String>()

    fun test(name: String, body: () -> Unit) {
        try {
            body()
            passed++
        } catch (e: Throwable) {
            failures.add("$name: ${e::class.simpleName}: ${e.message}")
            println("FAIL $name: ${e::class.simpleName}: ${e.message}")
        }
    }

    fun finish(): Int {
        println("${passed} passed, ${failures.size} failed")
        return if (failures.isEmpty()) 0 else 1
    }
}

fun check(condition: Boolean, message: () -> String) {
    if (!condition) throw AssertionError(message())
}

fun <T> checkEqual(expected: T, actual: T, what: String) {
    if (expected != actual) throw AssertionError("$what: expected $expected, got $actual")
}
