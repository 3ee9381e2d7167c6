// Command httpd serves a directory over plain HTTP, as any static web server
// would serve a published package repository, for the end-to-end tests of
// the apt and rpm repositories (repo.sh). Standard library only, built
// static by the e2e scripts; one log line per request on stderr (the
// journal of its transient unit).
//
//	httpd 127.0.0.1:8080 /srv/repo
package main

import (
	"log"
	"net/http"
	"os"
	"time"
)

type logged struct{ h http.Handler }

func (l logged) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log.Printf("%s %s", r.Method, r.URL.Path)
	l.h.ServeHTTP(w, r)
}

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: httpd ADDR DIR")
	}

	srv := &http.Server{
		Addr:              os.Args[1],
		Handler:           logged{http.FileServer(http.Dir(os.Args[2]))},
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Fatal(srv.ListenAndServe())
}
