<?php
// "Playing with Gearman": two addTask() + runTasks() with status and complete
// callbacks, after a doNormal() unless "nodo". Prints {"do", "do_rc", "ok", "events"}.
//   php two_tasks.php [nodo]
require __DIR__ . '/common.php';
$fn = "reverse";
$c = new_client(20000);
$do = $do_rc = null;
if (!in_array("nodo", $argv)) {
    $do = $c->doNormal($fn, "Hello World!");
    $do_rc = $c->returnCode();
}
$events = array();
$c->setCreatedCallback(function ($t) use (&$events) { $events[] = array("created", $t->unique(), $t->jobHandle()); });
$c->setStatusCallback(function ($t) use (&$events) {
    $events[] = array("status", $t->unique(), $t->taskNumerator(), $t->taskDenominator());
});
$c->setCompleteCallback(function ($t) use (&$events) { $events[] = array("complete", $t->unique(), $t->data()); });
$keep = array();
$keep[] = $c->addTask($fn, "Hello World!", null, "1");
$keep[] = $c->addTask($fn, "!dlroW olleH", null, "2");
$ok = $c->runTasks();
out(array("do" => $do, "do_rc" => $do_rc, "ok" => $ok, "events" => $events));
