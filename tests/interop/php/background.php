<?php
// "Playing with Gearman": addTaskBackground() (GEARMAN_CLIENT_FREE_TASKS as in the blog)
// and doBackground(). php-gearman 2.x only knows a task's handle inside callbacks,
// so it is taken in the created callback.
//   php background.php UNIQUE_PREFIX
// Prints {"options", "ok", "handles": {unique: handle}, "after_run", "do_bg", "do_bg_rc"}.
require __DIR__ . '/common.php';
$p = $argv[1];
$c = new_client();
$options = $c->setOptions(GEARMAN_CLIENT_FREE_TASKS);
$hs = array();
$c->setCreatedCallback(function ($t) use (&$hs) { $hs[$t->unique()] = $t->jobHandle(); });
$t1 = $c->addTaskBackground("reverse", "Hello World!", null, "$p-1");
$t2 = $c->addTaskBackground("reverse", "!dlroW olleH", null, "$p-2");
$ok = $c->runTasks();
ksort($hs);
$after = $t1->jobHandle();
$h3 = $c->doBackground("reverse", "third", "$p-3");
out(array("options" => $options, "ok" => $ok, "handles" => $hs, "after_run" => $after,
          "do_bg" => $h3, "do_bg_rc" => $c->returnCode()));
