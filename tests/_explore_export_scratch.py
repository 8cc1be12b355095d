import time, os
def test_hold(server, database_url):
    open("/tmp/explore_server.txt", "w").write(server + "\n" + database_url + "\n")
    time.sleep(int(os.environ.get("HOLD", "3000")))
