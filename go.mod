module nbchat

go 1.26
